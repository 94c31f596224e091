// Where the bytes of one rank's all-gather input land in the output. The
// input is viewed as [outer, inner] bytes (inner = the extents from `dim` on);
// the output as [outer, world, inner]. Writing straight into that layout
// means no gather-then-permute copy.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstring>

namespace tpcoll::cpu {

// Copies rank `rank`'s input bytes [begin, begin + length), held at `src`,
// into their places in `out`.
inline void place_gathered(const std::byte* src, std::size_t begin, std::size_t length, int rank, int world,
                           std::size_t inner, std::byte* out) {
  const std::size_t row_stride = static_cast<std::size_t>(world) * inner;
  std::size_t pos = begin;
  const std::size_t end = begin + length;
  while (pos < end) {
    const std::size_t row = pos / inner;
    const std::size_t col = pos % inner;
    const std::size_t n = std::min(inner - col, end - pos);
    std::memcpy(out + row * row_stride + static_cast<std::size_t>(rank) * inner + col, src + (pos - begin), n);
    pos += n;
  }
}

}  // namespace tpcoll::cpu
