// common/numerics.hpp on the device: its conversions, compiled for the GPU,
// must give exactly the bits they give on the host, and so must the
// kernels' narrowings (cuda/kernels/vector.cuh: the hardware's cvt.rn, one
// value or a pair at a time), NaN included (the canonical 0x7fff). The
// 16-bit to float widenings are checked for all 2^16 patterns, the
// narrowings for special values, every midpoint between adjacent 16-bit
// values, and a few million random floats. The same inputs go through the
// FP8 E4M3 conversion (common/fp8.hpp): the hardware's satfinite conversion
// (NaN: any NaN code), the kernels' quantiser (one value, and a pair at a
// time: NaN the canonical 0x7f) and float_to_e4m3 compiled for the device
// must all give the host converter's code; the inputs add every E4M3
// midpoint and its neighbours. The kernels' division by a row's divisor
// (common/division.hpp, by its reciprocal) must give the host's `f / d`
// bit for bit (NaN: any NaN), for a divisor just below 2 (the reciprocal's
// hardest significand), a per-token scale and 448 (which the per-token scale
// itself divides by), and so must the per-token scale max / 448. The
// kernels' group quantiser (a close quotient, else exact quotients)
// must give, for groups made of each input, the codes of the host's IEEE
// quotients by divisors of every kind: power of two (exact products), few
// significant bits (exact ties), hard significands and per-token scales.
//
// Exit status: 0 pass, 1 fail, 77 no CUDA device (ctest reports "Skipped").
#include "common/division.hpp"
#include "common/fp8.hpp"
#include "common/fp8_quantise.hpp"
#include "common/numerics.hpp"
#include "cuda/kernels/fp8_epilogue.cuh"
#include "cuda/kernels/vector.cuh"

#include <cuda_fp8.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace nx = tpcoll::numerics;

namespace {

constexpr int kGroupDivisors = 8;  // group_divisor(k)

struct Narrowed {
  std::uint16_t tp_bf16, tp_fp16, cuda_bf16, cuda_fp16;
  std::uint32_t pair_bf16, pair_fp16;  // store_pair(f, -f)
  std::uint8_t e4m3_hardware;          // __nv_cvt_float_to_fp8, satfinite
  std::uint8_t e4m3_quantise;          // fp8::quantise(f, divisor(1)), as the kernels quantise
  std::uint16_t e4m3_pair;             // e4m3_pair(f, -f)
  std::uint8_t e4m3_portable;          // fp8::float_to_e4m3 compiled for the device
  std::uint32_t quotient[3];           // numerics::quotient(f, divisor(test_divisor(k))), as bits
  std::uint32_t scale;                 // fp8::per_token_scale(|f|), as bits
  uint2 group_codes[kGroupDivisors];   // quantised_group(group_of(f), row_divisor_of(group_divisor(k)))
};

// A group of 8 values made of f (the lanes of a pair differ in sign and
// magnitude), as host and device form it.
__host__ __device__ float group_factor(int e) {
  constexpr float factors[8] = {1.0f, -1.0f, 2.0f, -0.5f, 3.0f, -0.375f, 1.5f, -448.0f};
  return factors[e];
}

// 2 - 2^-23, 3 / 448, 448, 1.5, 1, 2^-20, 0.01 and 2^-70 (outside the
// close quotient's range: every group takes the exact way).
__host__ __device__ float group_divisor(int k) {
  constexpr std::uint32_t bits[kGroupDivisors] = {0x3fffffffu, 0x3bdb6db7u, 0x43e00000u, 0x3fc00000u,
                                                  0x3f800000u, 0x35800000u, 0x3c23d70au, 0x1c800000u};
  return nx::bits_float(bits[k]);
}

// 2 - 2^-23, 3 / 448 and 448.
__host__ __device__ float test_divisor(int k) {
  return nx::bits_float(k == 0 ? 0x3fffffffu : k == 1 ? 0x3bdb6db7u : 0x43e00000u);
}

struct Widened {
  std::uint32_t tp_bf16, tp_fp16, cuda_bf16, cuda_fp16;
};

__global__ void narrow_kernel(const float* in, Narrowed* out, std::size_t n) {
  for (std::size_t i = blockIdx.x * static_cast<std::size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const float f = in[i];
    out[i].tp_bf16 = nx::float_to_bf16(f);
    out[i].tp_fp16 = nx::float_to_fp16(f);
    out[i].cuda_bf16 = tpcoll::cuda::BFloat16::store(f);
    out[i].cuda_fp16 = tpcoll::cuda::Float16::store(f);
    out[i].pair_bf16 = tpcoll::cuda::BFloat16::store_pair(f, -f);
    out[i].pair_fp16 = tpcoll::cuda::Float16::store_pair(f, -f);
    out[i].e4m3_hardware = __nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3);
    out[i].e4m3_quantise = tpcoll::fp8::quantise(f, nx::divisor(1.0f));
    out[i].e4m3_pair = tpcoll::cuda::e4m3_pair(f, -f);
    out[i].e4m3_portable = tpcoll::fp8::float_to_e4m3(f);
    for (int k = 0; k < 3; ++k)
      out[i].quotient[k] = __float_as_uint(nx::quotient(f, nx::divisor(test_divisor(k))));
    out[i].scale = __float_as_uint(tpcoll::fp8::per_token_scale(fabsf(f)));
    float group[8];
    for (int e = 0; e < 8; ++e) group[e] = __fmul_rn(f, group_factor(e));
    for (int k = 0; k < kGroupDivisors; ++k)
      out[i].group_codes[k] =
          tpcoll::cuda::quantised_group<tpcoll::cuda::Float32>(group, tpcoll::fp8::row_divisor_of(group_divisor(k)));
  }
}

__global__ void widen_kernel(Widened* out) {
  const unsigned h = blockIdx.x * blockDim.x + threadIdx.x;
  if (h > 0xffffu) return;
  const auto x = static_cast<std::uint16_t>(h);
  out[h].tp_bf16 = __float_as_uint(nx::bf16_to_float(x));
  out[h].tp_fp16 = __float_as_uint(nx::fp16_to_float(x));
  out[h].cuda_bf16 = __float_as_uint(__bfloat162float(__ushort_as_bfloat16(x)));
  out[h].cuda_fp16 = __float_as_uint(__half2float(__ushort_as_half(x)));
}

int failures = 0;

void fail(const char* what, std::uint32_t input, unsigned got, unsigned expected) {
  if (++failures <= 20)
    std::printf("FAILED %s: input 0x%08x gave 0x%04x, expected 0x%04x\n", what, input, got, expected);
}

bool check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return true;
  std::printf("FAILED %s: %s\n", what, cudaGetErrorString(e));
  ++failures;
  return false;
}

float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

bool is_nan_bits(std::uint32_t u) { return (u & 0x7fffffffu) > 0x7f800000u; }

}  // namespace

int main() {
  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  if (probe != cudaSuccess || devices == 0) {
    std::printf("no CUDA device (%s): skipping\n", probe != cudaSuccess ? cudaGetErrorString(probe) : "0 devices");
    return 77;
  }

  // ---- inputs ----
  std::vector<float> in;
  for (const std::uint32_t u :
       {0x00000000u, 0x80000000u, 0x00000001u, 0x80000001u, 0x007fffffu, 0x00800000u, 0x3f800000u, 0x7f7fffffu,
        0xff7fffffu, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x477ff000u, 0x477fefffu,
        0x38800000u, 0x387fffffu, 0x33000000u, 0x33000001u, 0x33c00000u, 0x3f808000u, 0x3f818000u})
    in.push_back(bits_to_float(u));
  // Every midpoint between adjacent finite 16-bit values, and one float ulp either side.
  for (std::uint32_t lo = 0; lo < 0x7f80u; ++lo) {
    const float mid = bits_to_float((lo << 16) | 0x8000u);
    for (const float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      in.push_back(f);
      in.push_back(-f);
    }
  }
  for (std::uint32_t lo = 0; lo < 0x7bffu; ++lo) {
    const float a = nx::fp16_to_float(static_cast<std::uint16_t>(lo));
    const float b = nx::fp16_to_float(static_cast<std::uint16_t>(lo + 1));
    const float mid = static_cast<float>((static_cast<double>(a) + b) / 2);
    for (const float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      in.push_back(f);
      in.push_back(-f);
    }
  }
  // Every midpoint between adjacent E4M3 values, and one float ulp either side.
  for (int code = 0; code < 0x7e; ++code) {
    const double a = tpcoll::fp8::e4m3_to_float(static_cast<std::uint8_t>(code));
    const double b = tpcoll::fp8::e4m3_to_float(static_cast<std::uint8_t>(code + 1));
    const auto mid = static_cast<float>((a + b) / 2);
    for (const float f : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      in.push_back(f);
      in.push_back(-f);
    }
  }
  for (const float f : {448.0f, 464.0f, 480.0f, 1e6f}) {
    in.push_back(f);
    in.push_back(-f);
  }
  // Random floats: all bit patterns, and ones within fp16's range (subnormals included).
  std::uint64_t state = 0x9e3779b97f4a7c15ull;
  const auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int i = 0; i < 4'000'000; ++i) {
    const std::uint64_t r = next();
    std::uint32_t u = static_cast<std::uint32_t>(r);
    if (i % 2) u = (u & 0x807fffffu) | ((96u + static_cast<std::uint32_t>((r >> 32) % 48)) << 23);
    in.push_back(bits_to_float(u));
  }

  // ---- device ----
  float* d_in = nullptr;
  Narrowed* d_narrow = nullptr;
  Widened* d_widen = nullptr;
  const std::size_t n = in.size();
  std::vector<Narrowed> narrow(n);
  std::vector<Widened> widen(65536);
  if (!check(cudaMalloc(&d_in, n * sizeof(float)), "cudaMalloc") ||
      !check(cudaMalloc(&d_narrow, n * sizeof(Narrowed)), "cudaMalloc") ||
      !check(cudaMalloc(&d_widen, 65536 * sizeof(Widened)), "cudaMalloc") ||
      !check(cudaMemcpy(d_in, in.data(), n * sizeof(float), cudaMemcpyHostToDevice), "cudaMemcpy"))
    return 1;
  narrow_kernel<<<1024, 256>>>(d_in, d_narrow, n);
  widen_kernel<<<256, 256>>>(d_widen);
  if (!check(cudaGetLastError(), "kernel launch") || !check(cudaDeviceSynchronize(), "kernels") ||
      !check(cudaMemcpy(narrow.data(), d_narrow, n * sizeof(Narrowed), cudaMemcpyDeviceToHost), "cudaMemcpy") ||
      !check(cudaMemcpy(widen.data(), d_widen, 65536 * sizeof(Widened), cudaMemcpyDeviceToHost), "cudaMemcpy"))
    return 1;

  // ---- compare ----
  for (std::size_t i = 0; i < n; ++i) {
    const float f = in[i];
    const std::uint32_t u = float_to_bits(f);
    const Narrowed& r = narrow[i];
    const std::uint16_t host_bf16 = nx::float_to_bf16(f), host_fp16 = nx::float_to_fp16(f);
    if (r.tp_bf16 != host_bf16) fail("device float_to_bf16 vs host", u, r.tp_bf16, host_bf16);
    if (r.tp_fp16 != host_fp16) fail("device float_to_fp16 vs host", u, r.tp_fp16, host_fp16);
    if (is_nan_bits(u)) {
      if (r.tp_bf16 != 0x7fff) fail("float_to_bf16 of NaN", u, r.tp_bf16, 0x7fff);
      if (r.tp_fp16 != 0x7fff) fail("float_to_fp16 of NaN", u, r.tp_fp16, 0x7fff);
    }
    const std::uint16_t host_neg_bf16 = nx::float_to_bf16(-f), host_neg_fp16 = nx::float_to_fp16(-f);
    if (r.cuda_bf16 != host_bf16) fail("BFloat16::store vs float_to_bf16", u, r.cuda_bf16, host_bf16);
    if (r.cuda_fp16 != host_fp16) fail("Float16::store vs float_to_fp16", u, r.cuda_fp16, host_fp16);
    if (r.pair_bf16 != (host_bf16 | std::uint32_t{host_neg_bf16} << 16))
      fail("BFloat16::store_pair vs float_to_bf16", u, r.pair_bf16, host_bf16 | std::uint32_t{host_neg_bf16} << 16);
    if (r.pair_fp16 != (host_fp16 | std::uint32_t{host_neg_fp16} << 16))
      fail("Float16::store_pair vs float_to_fp16", u, r.pair_fp16, host_fp16 | std::uint32_t{host_neg_fp16} << 16);
    const std::uint8_t host_e4m3 = tpcoll::fp8::float_to_e4m3(f), host_neg_e4m3 = tpcoll::fp8::float_to_e4m3(-f);
    const bool hardware_ok =
        is_nan_bits(u) ? (r.e4m3_hardware & 0x7fu) == 0x7fu : r.e4m3_hardware == host_e4m3;
    if (!hardware_ok) fail("cvt.rn.satfinite.e4m3 vs float_to_e4m3", u, r.e4m3_hardware, host_e4m3);
    if (r.e4m3_quantise != host_e4m3) fail("device fp8::quantise vs host float_to_e4m3", u, r.e4m3_quantise, host_e4m3);
    if (r.e4m3_pair != (host_e4m3 | host_neg_e4m3 << 8))
      fail("e4m3_pair vs float_to_e4m3", u, r.e4m3_pair, host_e4m3 | host_neg_e4m3 << 8);
    if (r.e4m3_portable != host_e4m3) fail("device float_to_e4m3 vs host", u, r.e4m3_portable, host_e4m3);
    for (int k = 0; k < 3; ++k) {
      const std::uint32_t want = float_to_bits(f / test_divisor(k));
      if (is_nan_bits(want) ? !is_nan_bits(r.quotient[k]) : r.quotient[k] != want)
        fail("device quotient by the reciprocal vs host f / d", u, r.quotient[k], want);
    }
    for (int k = 0; k < kGroupDivisors; ++k) {
      std::uint8_t codes[8];
      std::memcpy(codes, &r.group_codes[k], sizeof codes);
      for (int e = 0; e < 8; ++e) {
        const std::uint8_t want = tpcoll::fp8::quantise(f * group_factor(e), group_divisor(k));
        if (codes[e] != want) fail("device quantised_group vs host e4m3(f / d)", u, codes[e], want);
      }
    }
    const std::uint32_t host_scale = float_to_bits(tpcoll::fp8::per_token_scale(std::fabs(f)));
    if (is_nan_bits(host_scale) ? !is_nan_bits(r.scale) : r.scale != host_scale)
      fail("device per_token_scale vs host", u, r.scale, host_scale);
  }
  for (std::uint32_t h = 0; h <= 0xffffu; ++h) {
    const Widened& w = widen[h];
    const auto x = static_cast<std::uint16_t>(h);
    const std::uint32_t host_bf16 = float_to_bits(nx::bf16_to_float(x));
    const std::uint32_t host_fp16 = float_to_bits(nx::fp16_to_float(x));
    if (w.tp_bf16 != host_bf16) fail("device bf16_to_float vs host", h, w.tp_bf16, host_bf16);
    if (w.tp_fp16 != host_fp16) fail("device fp16_to_float vs host", h, w.tp_fp16, host_fp16);
    if (is_nan_bits(w.cuda_bf16) ? !is_nan_bits(w.tp_bf16) : w.tp_bf16 != w.cuda_bf16)
      fail("bf16_to_float vs __bfloat162float", h, w.tp_bf16, w.cuda_bf16);
    if (is_nan_bits(w.cuda_fp16) ? !is_nan_bits(w.tp_fp16) : w.tp_fp16 != w.cuda_fp16)
      fail("fp16_to_float vs __half2float", h, w.tp_fp16, w.cuda_fp16);
  }
  cudaFree(d_in);
  cudaFree(d_narrow);
  cudaFree(d_widen);
  std::printf("%zu narrowings and 65536 widenings checked: %d failure(s)\n", n, failures);
  return failures == 0 ? 0 : 1;
}
