#include "tools/bench/median_estimate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace tpcoll::bench {

MedianEstimate estimate_median(std::vector<double> samples) {
  MedianEstimate out;
  const auto n = static_cast<double>(samples.size());
  out.noise = std::numeric_limits<double>::infinity();
  if (samples.empty()) return out;
  std::sort(samples.begin(), samples.end());
  out.median = samples[samples.size() / 2];
  const double reach = 0.98 * std::sqrt(n);  // 1.96 standard deviations (sqrt(n) / 2) of Binomial(n, 1/2)
  const double low = std::floor(n / 2 - reach), high = std::ceil(n / 2 + reach);
  if (low < 0 || high > n - 1 || out.median <= 0) return out;
  out.noise = (samples[static_cast<std::size_t>(high)] - samples[static_cast<std::size_t>(low)]) / (2 * out.median);
  return out;
}

std::size_t more_samples(const SampleBudget& budget, std::size_t done, double sample_ms, double noise) {
  const auto samples_for = [&](double ms) {
    if (sample_ms <= 0) return budget.least;
    const double wanted = std::min(std::ceil(ms / sample_ms), static_cast<double>(budget.most));
    return std::max(budget.least, static_cast<std::size_t>(wanted));
  };
  const std::size_t first = budget.min_ms > 0 ? samples_for(budget.min_ms) : budget.least;
  if (done < first) return first - done;
  if (budget.max_noise <= 0 || noise <= budget.max_noise) return 0;
  const std::size_t most = samples_for(budget.max_ms);
  return done >= most ? 0 : std::min(done, most - done);
}

}  // namespace tpcoll::bench
