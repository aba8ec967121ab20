#include "sshd/startup_table.hpp"

#include <algorithm>

namespace gw::sshd {

StartupTable::Slot& StartupTable::Slot::operator=(Slot&& o) noexcept {
  if (this != &o) {
    release(Outcome::closed);
    table_ = std::move(o.table_);
    ip_ = o.ip_;
    token_ = o.token_;
  }
  return *this;
}

void StartupTable::Slot::bind(std::weak_ptr<SessionHandle> session) {
  if (!table_) {
    return;
  }
  std::lock_guard lock(table_->mutex_);
  const auto it = table_->by_ip_.find(ip_);  // gone already if another thread evicted it
  if (it == table_->by_ip_.end()) {
    return;
  }
  for (auto& e : it->second) {
    if (e.token == token_) {
      e.session = std::move(session);
    }
  }
}

void StartupTable::Slot::release(Outcome how) {
  if (table_) {
    table_->leave(ip_, token_, how, Clock::now());
    table_.reset();
  }
}

StartupTable::Acquired StartupTable::acquire(const Address& ip, Clock::time_point now) {
  Acquired out;
  std::lock_guard lock(mutex_);
  if (const auto p = penalized_until_.find(ip); p != penalized_until_.end()) {
    if (p->second - now > kPenaltyThreshold) {
      out.refusal = Refusal::penalized;
      return out;
    }
    if (p->second <= now) {
      penalized_until_.erase(p);
    }
  }
  auto& mine = by_ip_[ip];
  if (static_cast<int>(mine.size()) >= max_per_ip_) {
    out.refusal = Refusal::too_many_from_ip;
    return out;
  }
  if (total_ >= max_total_) {
    // Full: room for an address holding fewer slots than the one holding the most.
    auto heaviest = by_ip_.end();
    for (auto it = by_ip_.begin(); it != by_ip_.end(); ++it) {
      if (heaviest == by_ip_.end() || it->second.size() > heaviest->second.size()) {
        heaviest = it;
      }
    }
    if (heaviest == by_ip_.end() || heaviest->second.size() <= mine.size() + 1) {
      if (mine.empty()) {
        by_ip_.erase(ip);
      }
      out.refusal = Refusal::too_many;
      return out;
    }
    auto& victims = heaviest->second;
    const auto oldest =
        std::min_element(victims.begin(), victims.end(),
                         [](const Entry& a, const Entry& b) { return a.since < b.since; });
    out.evicted = oldest->session.lock();
    const Address victim_ip = heaviest->first;
    victims.erase(oldest);
    --total_;
    strike(victim_ip, now);
    if (victims.empty()) {
      by_ip_.erase(heaviest);  // `mine` stays valid: unordered_map erase keeps other elements
    }
  }
  auto& entries = by_ip_[ip];
  const std::uint64_t token = next_token_++;
  entries.push_back(Entry{token, now, {}});
  ++total_;
  out.slot.table_ = shared_from_this();
  out.slot.ip_ = ip;
  out.slot.token_ = token;
  return out;
}

void StartupTable::leave(const Address& ip, std::uint64_t token, Outcome how,
                         Clock::time_point now) {
  std::lock_guard lock(mutex_);
  const auto it = by_ip_.find(ip);
  if (it != by_ip_.end()) {
    auto& v = it->second;
    const auto e =
        std::find_if(v.begin(), v.end(), [&](const Entry& x) { return x.token == token; });
    if (e != v.end()) {  // an evicted slot is already gone
      v.erase(e);
      --total_;
    }
    if (v.empty()) {
      by_ip_.erase(it);
    }
  }
  if (how == Outcome::timed_out) {
    strike(ip, now);
  }
}

void StartupTable::strike(const Address& ip, Clock::time_point now) {
  auto& until = penalized_until_[ip];
  until = std::min(std::max(until, now) + kPenaltyPerStrike, now + kMaxPenalty);
  // Bounded by the addresses that struck within the last minute; forget expired ones when the
  // map grows, so a flood from many addresses can't grow it for ever.
  if (penalized_until_.size() > 4096) {
    std::erase_if(penalized_until_, [&](const auto& kv) { return kv.second <= now; });
  }
}

std::int64_t StartupTable::size() const {
  std::lock_guard lock(mutex_);
  return total_;
}

}  // namespace gw::sshd
