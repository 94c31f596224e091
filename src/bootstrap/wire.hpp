// The socket bootstrap's frames: a fixed header, then `length` payload bytes.
// Every header carries the job's random token, so a frame from another job
// (or a process that merely found the socket) is refused. The checks are
// plain functions of the bytes received, so they can be fuzzed without a
// socket (tests/fuzz/).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace tpcoll::wire {

inline constexpr std::uint32_t kMagic = 0x4C435054;  // "TPCL" little-endian
inline constexpr std::uint16_t kVersion = 2;          // 2: the token joined the header
// No legitimate frame is this large; a bigger length means a corrupt stream.
inline constexpr std::uint64_t kMaxPayload = std::uint64_t{1} << 40;
// Error frames carry a message; longer ones are cut when read.
inline constexpr std::uint64_t kMaxErrorMessage = 4096;

using Token = std::array<std::uint8_t, 16>;

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
  Token token;
};
static_assert(sizeof(FrameHeader) == 40, "the header is sent as raw bytes");

FrameHeader make_header(FrameKind kind, int rank, int world, std::uint64_t length, const Token& token);

// The header in `bytes` (exactly sizeof(FrameHeader) of them, as received).
FrameHeader decode_header(std::span<const std::byte> bytes);

// What every frame must satisfy: magic, version, this job's token and a
// possible length. A violation is logged (WARN) and thrown as
// TPCOLL_BOOTSTRAP_ERROR naming `who`.
void check_header(const FrameHeader& h, const Token& token, std::string_view who);

// A connecting peer's hello in a world of `world`; returns the rank it claims.
int check_hello(const FrameHeader& h, int world);

// An all-gather frame from rank `from` of `bytes` bytes; returns "" when
// good, else why not (rank 0 forwards the reason to every peer).
std::string describe_bad_gather(const FrameHeader& h, int from, std::uint64_t bytes);

// Rank 0's answer to an all-gather of `total` bytes: a result of exactly that
// size, or an error frame (returns true, the caller reads the message).
bool check_answer(const FrameHeader& h, std::uint64_t total);

}  // namespace tpcoll::wire
