// Whether the ranks still sit where they sat when the run was fastest.
//
// On a virtual machine the host decides where the vCPUs run, and it moves
// them. On the 2-vCPU AMD EPYC development VM the two ranks' CPUs were, for
// stretches of 0.4 s to a few minutes, far apart: a cache line's round trip
// between them took 301-387 ns instead of 50-77, a 1 MiB fp32 all-reduce 500
// us instead of 82, and the faster of one-shot and two-shot changed at some
// sizes (bench/results/cpu-epyc-2core-placement.txt). A row timed in such a
// stretch compares the candidates on another machine than the rest of the
// run. The probe notices it: the time of a 4-byte all-reduce, a few flag
// round trips between the ranks, against the fastest seen in this run.
#pragma once

#include <tpcoll/tpcoll.hpp>

#include <chrono>
#include <functional>
#include <utility>

namespace tpcoll::bench {

// Collective: the slowest rank's median time of a 4-byte all-reduce, in us.
double tiny_all_reduce_us(Communicator& comm);

struct PlacementLimits {
  // On the EPYC VM the kept probes of the 2-rank acceptance runs read
  // 0.22-0.32 us; a 256 B all-reduce took 0.24-0.37 us with the ranks close
  // and 0.74-0.96 apart (cpu-epyc-2core-placement.txt, part 3). With more
  // ranks than CPUs the probe measures the ranks' time slicing (16.5-20.8 us
  // at 4 ranks on 2 CPUs) and no longer sees the placement.
  double moved_factor = 2.0;
  std::chrono::milliseconds poll{20};
  int most_polls = 1500;  // about half a minute of polls
};

class PlacementProbe {
 public:
  // `measure_us` must be collective and give every rank the same value, so
  // that every rank takes the same decisions.
  explicit PlacementProbe(std::function<double()> measure_us, PlacementLimits limits = {})
      : measure_us_(std::move(measure_us)), limits_(limits) {}

  // A measurement, which also updates the run's fastest.
  double probe();
  double last_us() const { return last_us_; }
  // Whether a probe of `us` found the ranks slower to reach each other than
  // at the run's fastest by more than moved_factor. A run that starts far
  // apart learns it only once the host brings the ranks close (so the bench
  // judges its rows again at the end).
  bool moved(double us) const { return us > limits_.moved_factor * fastest_us_; }
  // Probes every `poll` until the ranks are back where they were fastest, at
  // most `most_polls` times. Returns whether they came back, and adds the
  // seconds waited to `waited_s`.
  bool settle(double& waited_s);

 private:
  std::function<double()> measure_us_;
  PlacementLimits limits_;
  double fastest_us_ = 0;
  double last_us_ = 0;
};

}  // namespace tpcoll::bench
