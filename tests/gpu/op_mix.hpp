// A mix of ops for the issue-18 GPU tests: all-reduce, all-gather and the
// fused op at four sizes each, fp32 inputs of small integers (every sum is
// exact in any order), each op writing its own output slot so that every
// result can be checked after a whole run. Expected results come from the
// host: exact sums, and the CPU add + RMSNorm kernel, which the GPU kernels
// match bit for bit.
#pragma once

#include "cpu/kernels.hpp"

#include <tpcoll/tpcoll.h>

#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

class OpMix {
 public:
  // Device memory for one buffer: cudaMalloc unless the test supplies
  // another allocator (virtual-memory mappings, for instance).
  using Alloc = std::function<void*(std::size_t)>;

  static constexpr int kKinds = 3, kSizes = 4;
  static constexpr std::size_t kReduceCounts[kSizes] = {64, 1000, 4096, 16384};
  static constexpr std::size_t kGatherCounts[kSizes] = {16, 500, 2048, 4096};  // per rank, <= 16384 / world
  static constexpr std::size_t kFusedRows[kSizes] = {1, 3, 8, 16};              // x kHidden
  static constexpr std::size_t kHidden = 1024;
  static constexpr std::size_t kSlotFloats = 16384;  // the largest output of any op, world <= 4

  OpMix(int world, int ops, Alloc alloc = nullptr) : world_(world), ops_(ops) {
    if (!alloc)
      alloc = [this](std::size_t bytes) {
        void* p = nullptr;
        if (cudaMalloc(&p, bytes) != cudaSuccess) return static_cast<void*>(nullptr);
        owned_.push_back(p);
        return p;
      };
    ranks_.resize(world);
    for (int r = 0; r < world; ++r) {
      Rank& rank = ranks_[r];
      rank.in = static_cast<float*>(alloc(kSlotFloats * sizeof(float)));
      rank.residual = static_cast<float*>(alloc(kSlotFloats * sizeof(float)));
      rank.weight = static_cast<float*>(alloc(kHidden * sizeof(float)));
      rank.out = static_cast<float*>(alloc(ops * kSlotFloats * sizeof(float)));
      rank.residual_out = static_cast<float*>(alloc(ops * kSlotFloats * sizeof(float)));
      std::vector<float> in(kSlotFloats);
      for (std::size_t i = 0; i < kSlotFloats; ++i) in[i] = input(r, i);
      cudaMemcpy(rank.in, in.data(), in.size() * sizeof(float), cudaMemcpyHostToDevice);
      cudaMemcpy(rank.residual, residual().data(), kSlotFloats * sizeof(float), cudaMemcpyHostToDevice);
      cudaMemcpy(rank.weight, weight().data(), kHidden * sizeof(float), cudaMemcpyHostToDevice);
    }
  }
  // Buffers from a test's allocator are the test's to free.
  ~OpMix() {
    cudaDeviceSynchronize();
    for (void* p : owned_) cudaFree(p);
  }
  OpMix(const OpMix&) = delete;
  OpMix& operator=(const OpMix&) = delete;

  bool allocated() const {
    for (const Rank& r : ranks_)
      if (!r.in || !r.residual || !r.weight || !r.out || !r.residual_out) return false;
    return true;
  }

  // Enqueues op i of rank r (op i's kind and size are the same on every rank).
  tpcoll_result_t issue(tpcoll_comm_t comm, int r, int i, cudaStream_t stream) const {
    const Rank& rank = ranks_[r];
    float* out = rank.out + static_cast<std::size_t>(i) * kSlotFloats;
    const int size = (i / kKinds) % kSizes;
    switch (i % kKinds) {
      case 0: return tpcoll_all_reduce(comm, rank.in, out, kReduceCounts[size], TPCOLL_FLOAT32, stream);
      case 1: {
        const std::int64_t shape[] = {static_cast<std::int64_t>(kGatherCounts[size])};
        return tpcoll_all_gather(comm, rank.in, out, TPCOLL_FLOAT32, 1, shape, 0, stream);
      }
      default:
        return tpcoll_fused_allreduce_residual_rmsnorm(
            comm, rank.in, rank.residual, rank.weight, out, rank.residual_out + static_cast<std::size_t>(i) * kSlotFloats,
            kFusedRows[size], kHidden, TPCOLL_FLOAT32, 1e-5f, stream);
    }
  }

  // After every op of rank r completed: "" if all ops' results are right,
  // else the first wrong one.
  std::string check(int r) const {
    const Rank& rank = ranks_[r];
    std::vector<float> out(static_cast<std::size_t>(ops_) * kSlotFloats),
        residual_out(static_cast<std::size_t>(ops_) * kSlotFloats);
    if (cudaMemcpy(out.data(), rank.out, out.size() * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess ||
        cudaMemcpy(residual_out.data(), rank.residual_out, out.size() * sizeof(float), cudaMemcpyDeviceToHost) !=
            cudaSuccess)
      return "copying the results back failed";
    for (int i = 0; i < ops_; ++i) {
      const int kind = i % kKinds, size = (i / kKinds) % kSizes;
      const std::vector<float>& want = expected(kind, size, false);
      const float* got = out.data() + static_cast<std::size_t>(i) * kSlotFloats;
      if (std::memcmp(got, want.data(), want.size() * sizeof(float)) != 0)
        return "rank " + std::to_string(r) + ": op " + std::to_string(i) + " (" + kind_name(kind) + ") is wrong";
      if (kind == 2) {
        const std::vector<float>& want_res = expected(kind, size, true);
        if (std::memcmp(residual_out.data() + static_cast<std::size_t>(i) * kSlotFloats, want_res.data(),
                        want_res.size() * sizeof(float)) != 0)
          return "rank " + std::to_string(r) + ": op " + std::to_string(i) + " (fused) residual_out is wrong";
      }
    }
    return {};
  }

 private:
  struct Rank {
    float* in = nullptr;
    float* residual = nullptr;
    float* weight = nullptr;
    float* out = nullptr;           // ops x kSlotFloats
    float* residual_out = nullptr;  // ops x kSlotFloats (fused ops only)
  };

  static const char* kind_name(int kind) { return kind == 0 ? "all_reduce" : kind == 1 ? "all_gather" : "fused"; }
  static float input(int r, std::size_t i) { return static_cast<float>(static_cast<int>((i * 3 + r * 5) % 64) - 32); }
  static const std::vector<float>& residual() {
    static const std::vector<float> v = [] {
      std::vector<float> x(kSlotFloats);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(static_cast<int>(i % 9) - 4);
      return x;
    }();
    return v;
  }
  static const std::vector<float>& weight() {
    static const std::vector<float> v = [] {
      std::vector<float> x(kHidden);
      for (std::size_t i = 0; i < x.size(); ++i) x[i] = 0.5f + static_cast<float>(i % 5) * 0.25f;
      return x;
    }();
    return v;
  }

  float sum(std::size_t i) const {
    float s = 0.0f;
    for (int r = 0; r < world_; ++r) s += input(r, i);
    return s;
  }

  // The expected output (or, for the fused op, residual_out) of a kind and size.
  const std::vector<float>& expected(int kind, int size, bool residual_out) const {
    std::vector<float>& cached = expected_[(kind * kSizes + size) * 2 + (residual_out ? 1 : 0)];
    if (!cached.empty()) return cached;
    if (kind == 0) {
      cached.resize(kReduceCounts[size]);
      for (std::size_t i = 0; i < cached.size(); ++i) cached[i] = sum(i);
    } else if (kind == 1) {
      const std::size_t n = kGatherCounts[size];
      cached.resize(n * static_cast<std::size_t>(world_));
      for (int r = 0; r < world_; ++r)
        for (std::size_t i = 0; i < n; ++i) cached[r * n + i] = input(r, i);
    } else {
      const std::size_t n = kFusedRows[size] * kHidden;
      std::vector<float> x(n), out(n), res(n);
      for (std::size_t i = 0; i < n; ++i) x[i] = sum(i);
      tpcoll::cpu::add_rmsnorm(TPCOLL_FLOAT32, tpcoll::RmsNormRows{x.data(), residual().data(), weight().data(),
                                                                   out.data(), res.data(), kFusedRows[size], kHidden,
                                                                   1e-5f});
      expected_[(kind * kSizes + size) * 2] = out;
      expected_[(kind * kSizes + size) * 2 + 1] = res;
    }
    return cached;
  }

  int world_;
  int ops_;
  std::vector<Rank> ranks_;
  std::vector<void*> owned_;  // from the default allocator
  mutable std::vector<float> expected_[kKinds * kSizes * 2];
};
