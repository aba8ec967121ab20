// A bounded multi-producer, single-consumer FIFO for handing work from I/O threads to one
// background thread (the event log's writer). Producers never block: when the queue is full the
// item is refused and counted, so a slow disk costs events, never latency on an I/O thread.
// Deliberately not lock-free and not a general container: one mutex, one condition variable,
// a consumer that takes everything queued at once (so it can write a batch and flush once).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace gw {

/// Thread-safe. `T` must be movable; pushing moves it in.
template <class T>
class BoundedQueue {
 public:
  /// `capacity` items at most (at least 1).
  explicit BoundedQueue(std::size_t capacity) : capacity_(capacity == 0 ? 1 : capacity) {}
  BoundedQueue(const BoundedQueue&) = delete;
  BoundedQueue& operator=(const BoundedQueue&) = delete;

  /// Never blocks. False when the queue is full or closed: the item is dropped and counted in
  /// dropped().
  bool try_push(T item) {
    bool was_empty = false;
    {
      std::lock_guard lock(mutex_);
      if (closed_ || items_.size() >= capacity_) {
        ++dropped_;
        return false;
      }
      was_empty = items_.empty();
      items_.push_back(std::move(item));
      ++pushed_;
    }
    // The consumer only waits on an empty queue, so only the first push after empty wakes it.
    if (was_empty) {
      ready_.notify_one();
    }
    return true;
  }

  /// Waits until an item is queued or the queue is closed (at most `max_wait` when given), then
  /// appends every queued item to `out`, oldest first. Returns false once the queue is closed
  /// and empty: the consumer's signal to stop. Items queued before close() are still returned.
  bool pop_all(std::vector<T>& out,
               std::optional<std::chrono::steady_clock::duration> max_wait = std::nullopt) {
    std::unique_lock lock(mutex_);
    const auto has_work = [this] { return closed_ || !items_.empty(); };
    if (max_wait) {
      ready_.wait_for(lock, *max_wait, has_work);
    } else {
      ready_.wait(lock, has_work);
    }
    const bool stop = closed_ && items_.empty();
    out.reserve(out.size() + items_.size());
    for (auto& item : items_) {
      out.push_back(std::move(item));
    }
    items_.clear();
    return !stop;
  }

  /// Refuses later pushes and wakes the consumer; what is queued stays to be popped.
  void close() {
    {
      std::lock_guard lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
  }

  /// Items refused because the queue was full or closed, since construction.
  std::uint64_t dropped() const {
    std::lock_guard lock(mutex_);
    return dropped_;
  }
  /// Items accepted since construction. Popped items are the first pushed() ones in order, so a
  /// consumer that counts what it has handled can tell when everything pushed so far is done.
  std::uint64_t pushed() const {
    std::lock_guard lock(mutex_);
    return pushed_;
  }
  std::size_t size() const {
    std::lock_guard lock(mutex_);
    return items_.size();
  }
  std::size_t capacity() const { return capacity_; }

 private:
  const std::size_t capacity_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<T> items_;  // guarded by mutex_, like the fields below
  std::uint64_t dropped_ = 0;
  std::uint64_t pushed_ = 0;
  bool closed_ = false;
};

}  // namespace gw
