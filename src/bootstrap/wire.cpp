#include "bootstrap/wire.hpp"

#include "core/error.hpp"
#include "core/log.hpp"

#include <cstring>
#include <string>

namespace tpcoll::wire {
namespace {

// Rejections are logged as well as thrown: the error reaches the caller of
// this rank only, the log line also tells whoever watches the job's output
// that something foreign knocked.
template <typename... Args>
[[noreturn]] void reject(fmt::format_string<Args...> format, Args&&... args) {
  const std::string message = fmt::format(format, std::forward<Args>(args)...);
  log(LogLevel::kWarn, "bootstrap", "rejected a frame: {}", message);
  throw Error(TPCOLL_BOOTSTRAP_ERROR, message);
}

}  // namespace

FrameHeader make_header(FrameKind kind, int rank, int world, std::uint64_t length, const Token& token) {
  return FrameHeader{kMagic,
                     kVersion,
                     static_cast<std::uint16_t>(kind),
                     static_cast<std::uint32_t>(rank),
                     static_cast<std::uint32_t>(world),
                     length,
                     token};
}

FrameHeader decode_header(std::span<const std::byte> bytes) {
  if (bytes.size() != sizeof(FrameHeader))
    reject("a frame header is {} bytes, got {}", sizeof(FrameHeader), bytes.size());
  FrameHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  return h;
}

void check_header(const FrameHeader& h, const Token& token, std::string_view who) {
  if (h.magic != kMagic)
    reject("bootstrap: {} sent bad magic 0x{:08x} (expected 0x{:08x}): not a tpcoll peer", who, h.magic, kMagic);
  if (h.version != kVersion)
    reject("bootstrap: {} speaks protocol version {}, this rank {}", who, h.version, kVersion);
  if (h.token != token)
    reject("bootstrap: {} sent a frame with the wrong job token: not a rank of this job", who);
  if (h.length > kMaxPayload) reject("bootstrap: {} announced an impossible length {}", who, h.length);
}

int check_hello(const FrameHeader& h, int world) {
  if (h.kind != static_cast<std::uint16_t>(FrameKind::kHello) || h.length != 0)
    reject("bootstrap: expected a hello frame, got kind {} with length {}", h.kind, h.length);
  if (h.world != static_cast<std::uint32_t>(world))
    reject("bootstrap: rank {} says world size {}, rank 0 says {}", h.rank, h.world, world);
  if (h.rank == 0 || h.rank >= static_cast<std::uint32_t>(world))
    reject("bootstrap: a peer claims rank {}, outside 1..{}", h.rank, world - 1);
  return static_cast<int>(h.rank);
}

std::string describe_bad_gather(const FrameHeader& h, int from, std::uint64_t bytes) {
  if (h.kind != static_cast<std::uint16_t>(FrameKind::kGather) || h.rank != static_cast<std::uint32_t>(from))
    return fmt::format("bootstrap: rank {} sent frame kind {} claiming rank {}; expected an all-gather frame", from,
                       h.kind, h.rank);
  if (h.length != bytes)
    return fmt::format("bootstrap: ranks disagree on the all-gather size: rank {} sent {} bytes, rank 0 {}", from,
                       h.length, bytes);
  return {};
}

bool check_answer(const FrameHeader& h, std::uint64_t total) {
  if (h.kind == static_cast<std::uint16_t>(FrameKind::kError)) return true;
  if (h.kind != static_cast<std::uint16_t>(FrameKind::kResult) || h.length != total)
    reject("bootstrap: rank 0 answered frame kind {} of {} bytes; expected {} bytes", h.kind, h.length, total);
  return false;
}

}  // namespace tpcoll::wire
