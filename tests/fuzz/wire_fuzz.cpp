// libFuzzer target: the bootstrap's frame checks (src/bootstrap/wire.hpp) on
// arbitrary bytes, as rank 0 and a peer meet them on the socket.
//
// Input: [1 byte: role and world size][40 bytes: a frame header][rest: payload].
// Oracles beyond "no crash, no sanitizer report": a frame the checks accept
// really has the magic, version, token and a sane length; every rejection is
// a TPCOLL_BOOTSTRAP_ERROR with a message; a hello that passes names a rank
// inside the world.
#include "bootstrap/wire.hpp"

#include <tpcoll/error.hpp>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

namespace {

// The fuzzer's job token. An input may carry it (found by the fuzzer, or by
// the low bit of the first byte below) to get past the token check.
constexpr tpcoll::wire::Token kToken{0x3a, 0x91, 0x07, 0xc4, 0x5e, 0x22, 0xf0, 0x18,
                                     0x6b, 0xd9, 0x40, 0x8e, 0x13, 0xa7, 0x55, 0xcc};

void require(bool ok) {
  if (!ok) std::abort();  // an oracle failed: libFuzzer records the input
}

template <typename Fn>
bool accepted(Fn&& fn) {
  try {
    fn();
    return true;
  } catch (const tpcoll::Error& e) {
    require(e.code() == TPCOLL_BOOTSTRAP_ERROR && std::strlen(e.what()) > 0);
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace tpcoll::wire;
  if (size < 1) return 0;
  const std::uint8_t control = data[0];
  const auto rest = std::as_bytes(std::span(data + 1, size - 1));
  const int world = 1 + (control >> 2) % 64;

  // Any length other than a header's is refused, never read past.
  FrameHeader h{};
  if (!accepted([&] { h = decode_header(rest.first(std::min(rest.size(), sizeof(FrameHeader)))); })) return 0;
  const auto payload = rest.subspan(sizeof(FrameHeader));
  if (control & 1) h.token = kToken;

  if (!accepted([&] { check_header(h, kToken, "the fuzzer"); })) return 0;
  require(h.magic == kMagic && h.version == kVersion && h.token == kToken && h.length <= kMaxPayload);

  switch ((control >> 1) & 1) {
    case 0: {  // rank 0 meets a connecting peer, then its all-gather frame
      int rank = -1;
      if (accepted([&] { rank = check_hello(h, world); })) {
        require(rank >= 1 && rank < world && h.length == 0);
        return 0;
      }
      const std::string why = describe_bad_gather(h, static_cast<int>(control % 8), payload.size());
      require(why.empty() == (h.kind == static_cast<std::uint16_t>(FrameKind::kGather) &&
                              h.rank == static_cast<std::uint32_t>(control % 8) && h.length == payload.size()));
      break;
    }
    case 1: {  // a peer reads rank 0's answer to an all-gather of payload.size() bytes in total
      bool is_error = false;
      if (accepted([&] { is_error = check_answer(h, payload.size()); }))
        require(is_error ? h.kind == static_cast<std::uint16_t>(FrameKind::kError) : h.length == payload.size());
      break;
    }
  }
  return 0;
}
