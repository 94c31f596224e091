// How well a median of timed calls is known, and how many more samples a
// timing takes until it is known well enough to be compared: the CPU
// harness's calls and the GPU bench's graph replays follow the same rule.
#pragma once

#include <cstddef>
#include <vector>

namespace tpcoll::bench {

struct MedianEstimate {
  double median = 0;
  // Half the width of the median's 95% confidence interval, relative to the
  // median (0.01: known within +-1%); infinite where too few samples give no
  // interval. The interval is distribution-free (the order statistics n/2 -+
  // 0.98 sqrt(n), from the binomial count of samples below the true median),
  // as call times on a shared machine follow no known distribution.
  double noise = 0;
};

// `samples` in any order; the median is the upper one of an even count.
MedianEstimate estimate_median(std::vector<double> samples);

// The bench's -n, --min-ms, --max-noise and --max-ms, for samples (a call or
// a graph replay) of a known duration.
struct SampleBudget {
  std::size_t least = 1;  // -n: samples at least
  double min_ms = 0;      // at least this long (0: -n alone)
  double max_noise = 0;   // a fraction (0.005: +-0.5%); 0: no more samples for the noise
  double max_ms = 0;      // with max_noise, at most this long
  std::size_t most = 100000;  // never more samples than this for min_ms or max_ms
};

// How many samples to take after `done`, given that a sample takes
// `sample_ms` (0 where unknown: -n alone counts) and the medians so far are
// known within `noise`; 0: enough. First the least (-n, or --min-ms's worth),
// then, while the noise is above max_noise and max_ms is not spent, as many
// again as taken so far (doubling), so that the work is at most twice what
// the noise needed.
std::size_t more_samples(const SampleBudget& budget, std::size_t done, double sample_ms, double noise);

}  // namespace tpcoll::bench
