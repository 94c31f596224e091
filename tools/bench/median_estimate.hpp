// How well a median of timed calls is known, so that the bench can time a
// row until the medians it compares are known well enough to be compared.
#pragma once

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

}  // namespace tpcoll::bench
