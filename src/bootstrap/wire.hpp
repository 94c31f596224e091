// The socket bootstrap's frames: a fixed header, then `length` payload bytes.
#pragma once

#include <cstdint>

namespace tpcoll::wire {

inline constexpr std::uint32_t kMagic = 0x4C435054;  // "TPCL" little-endian
inline constexpr std::uint16_t kVersion = 1;
// No legitimate frame is this large; a bigger length means a corrupt stream.
inline constexpr std::uint64_t kMaxPayload = std::uint64_t{1} << 40;

enum class FrameKind : std::uint16_t {
  kHello = 1,   // peer -> root: I am rank R of world W
  kGather = 2,  // peer -> root: my contribution
  kResult = 3,  // root -> peer: everyone's contributions
  kError = 4,   // root -> peer: the exchange failed; payload is the message
};

struct FrameHeader {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t kind;
  std::uint32_t rank;
  std::uint32_t world;
  std::uint64_t length;
};
static_assert(sizeof(FrameHeader) == 24, "the header is sent as raw bytes");

}  // namespace tpcoll::wire
