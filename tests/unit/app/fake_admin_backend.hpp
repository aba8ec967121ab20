// A scripted AdminBackend for the admin HTTP tests: fixed endpoints and sessions, records
// close_session calls, optionally throws.
#pragma once

#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "app/admin_http.hpp"

namespace gw::app::testing {

class FakeAdminBackend : public AdminBackend {
 public:
  FakeAdminBackend() {
    EndpointView e;
    e.id = "ep_12";
    e.url = "tls://app.example.com";
    e.created_at = "2024-05-01T12:00:00.000000Z";
    e.pool = false;
    e.session_id = 17;
    e.key_fingerprint = "SHA256:abc";
    e.key_name = "alice@laptop";
    e.client_addr = "192.0.2.4:50022";
    e.open_connections = 2;
    e.bytes_in = 100;
    e.bytes_out = 200;
    endpoints_.push_back(e);
    e.id = "ep_13";
    e.url = "tls://api.example.com:8443";
    e.pool = true;
    endpoints_.push_back(e);

    SessionView s;
    s.id = 17;
    s.client_addr = "192.0.2.4:50022";
    s.user = "alice";
    s.key_fingerprint = "SHA256:abc";
    s.key_name = "alice@laptop";
    s.started_at = "2024-05-01T11:59:59.000000Z";
    s.endpoint_urls = {"tls://app.example.com", "tls://api.example.com:8443"};
    s.open_connections = 2;
    s.state = "active";
    sessions_.push_back(s);
  }

  std::vector<EndpointView> endpoints() override {
    maybe_throw();
    return endpoints_;
  }
  std::vector<SessionView> sessions() override {
    maybe_throw();
    return sessions_;
  }
  bool close_session(std::uint64_t id, std::string message) override {
    std::lock_guard lock(mutex_);
    closed_.emplace_back(id, std::move(message));
    return id == 17;
  }
  std::string metrics_text() override {
    maybe_throw();
    return "# HELP snigate_sessions x\n# TYPE snigate_sessions gauge\nsnigate_sessions 1\n";
  }

  std::vector<std::pair<std::uint64_t, std::string>> closed() {
    std::lock_guard lock(mutex_);
    return closed_;
  }
  bool fail = false;

 private:
  void maybe_throw() const {
    if (fail) {
      throw std::runtime_error("backend down");
    }
  }
  std::vector<EndpointView> endpoints_;
  std::vector<SessionView> sessions_;
  std::mutex mutex_;
  std::vector<std::pair<std::uint64_t, std::string>> closed_;
};

}  // namespace gw::app::testing
