// libFuzzer harness: the --config TOML layer on arbitrary bytes must not crash or hang, must
// give exactly one of settings or a one-line "snigate: " error, and a configuration it accepts
// must print (--print-config) as TOML that reads back to the same configuration. Deliberately
// no environment or real files: the bytes are the file.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "app/cli.hpp"
#include "app/config.hpp"

namespace {

gw::app::FileReader reader(std::string text) {
  return [text = std::move(text)](const std::string&, std::string&) -> std::optional<std::string> {
    return text;
  };
}

bool one_line_error(const std::string& e) {
  return e.starts_with("snigate: ") && e.find('\n') == std::string::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const auto settings = gw::app::parse_config_toml(text, "fuzz.toml");
  if (!settings.error.empty() && (!settings.settings.empty() || !one_line_error(settings.error))) {
    std::abort();
  }
  for (const auto& s : settings.settings) {
    if (!gw::app::is_config_key(s.key) || s.values.empty()) {
      std::abort();
    }
  }

  const auto r =
      gw::app::parse_args({"snigate", "serve", "--config", "fuzz.toml"}, {}, reader(text));
  if (!r.error.empty()) {
    if (!one_line_error(r.error)) {
      std::abort();
    }
    return 0;
  }
  if (!settings.error.empty()) {
    std::abort();  // the file parsed on its own, so only its values may be refused
  }
  // The token is never printed, so it cannot come back.
  gw::app::ServeConfig expected = r.config;
  expected.admin_token.clear();
  const auto back = gw::app::parse_args({"snigate", "serve", "--config", "print.toml"}, {},
                                        reader(gw::app::to_toml(r.config)));
  if (!back.error.empty() || gw::app::to_toml(back.config) != gw::app::to_toml(expected)) {
    std::abort();
  }
  return 0;
}
