// Out-of-line anchor for EventSink's vtable (one definition, not one per TU).
#include "tunnel/events.hpp"

namespace gw::tunnel {

EventSink::~EventSink() = default;

}  // namespace gw::tunnel
