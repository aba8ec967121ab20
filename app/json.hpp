// JSON for everything app/ writes (events, the admin API, `keys list --json`): one escaper, so
// every output is valid JSON whatever bytes peers or key comments hold, and one streaming object
// writer for their fixed shapes. Deliberately no JSON object model and no parser.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gw::app {

/// Appends `s` to `out` as a JSON string literal (with the quotes). Valid UTF-8 passes through;
/// each byte of an invalid sequence becomes U+FFFD; `"` `\` and control characters (C0, DEL,
/// C1, U+2028/2029) are escaped, so a line is always valid JSON and safe to print on a
/// terminal. Strings longer than `max` bytes are cut at a character boundary and end in "...".
void append_json_string(std::string& out, std::string_view s, std::size_t max = 1024);

/// Writes one JSON object, field by field in call order, with no whitespace:
/// `JsonObject().str("id", id).num("n", 3).take()` is `{"id":"...","n":3}`.
class JsonObject {
 public:
  JsonObject() { out_ += '{'; }

  JsonObject& str(std::string_view k, std::string_view v) {
    key(k);
    append_json_string(out_, v);
    return *this;
  }
  /// Empty means "not applicable": written as null so consumers can tell it from "".
  JsonObject& str_or_null(std::string_view k, std::string_view v) {
    return v.empty() ? null(k) : str(k, v);
  }
  JsonObject& num(std::string_view k, std::uint64_t v) {
    key(k);
    out_ += std::to_string(v);
    return *this;
  }
  JsonObject& num(std::string_view k, std::int64_t v) {
    key(k);
    out_ += std::to_string(v);
    return *this;
  }
  JsonObject& boolean(std::string_view k, bool v) {
    key(k);
    out_ += v ? "true" : "false";
    return *this;
  }
  JsonObject& null(std::string_view k) {
    key(k);
    out_ += "null";
    return *this;
  }
  JsonObject& str_array(std::string_view k, const std::vector<std::string>& values) {
    key(k);
    out_ += '[';
    for (std::size_t i = 0; i < values.size(); ++i) {
      out_ += i == 0 ? "" : ",";
      append_json_string(out_, values[i]);
    }
    out_ += ']';
    return *this;
  }
  /// `json`, already valid JSON text (an array of objects this writer made), under `k`.
  JsonObject& raw(std::string_view k, std::string_view json) {
    key(k);
    out_ += json;
    return *this;
  }
  /// A nested object under `k`, closed by end().
  JsonObject& begin(std::string_view k) {
    key(k);
    out_ += '{';
    first_ = true;
    return *this;
  }
  JsonObject& end() {
    out_ += '}';
    first_ = false;
    return *this;
  }
  /// The text, with the outer object closed.
  std::string take() {
    out_ += '}';
    return std::move(out_);
  }

 private:
  void key(std::string_view k) {
    if (!first_) {
      out_ += ',';
    }
    first_ = false;
    append_json_string(out_, k);
    out_ += ':';
  }

  std::string out_;
  bool first_ = true;
};

}  // namespace gw::app
