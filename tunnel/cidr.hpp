// Forwarding header: Cidr and AccessRule moved to common/cidr.hpp (keys/ needs them and must
// not depend on tunnel/). Kept so sshd/ compiles unchanged until its includes move; remove then.
#pragma once

#include "common/cidr.hpp"

namespace gw::tunnel {
using gw::AccessRule;
using gw::Cidr;
}  // namespace gw::tunnel
