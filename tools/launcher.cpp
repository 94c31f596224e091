#include "tools/launcher.hpp"

#include <fmt/format.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <stdexcept>
#include <vector>

namespace tpcoll::tools {
namespace {

volatile sig_atomic_t g_forwarded_signal = 0;

void remember_signal(int sig) { g_forwarded_signal = sig; }

// One rank's output stream, forwarded line by line with a prefix.
struct Stream {
  int fd = -1;
  FILE* sink = nullptr;
  std::string prefix;
  std::string pending;

  void forward(const char* data, std::size_t n) {
    pending.append(data, n);
    std::size_t start = 0;
    for (std::size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1)
      std::fprintf(sink, "%s%.*s\n", prefix.c_str(), static_cast<int>(nl - start), pending.data() + start);
    pending.erase(0, start);
    std::fflush(sink);
  }
  void flush_tail() {
    if (!pending.empty()) std::fprintf(sink, "%s%s\n", prefix.c_str(), pending.c_str());
    pending.clear();
    std::fflush(sink);
  }
};

struct Rank {
  pid_t pid = -1;
  bool running = false;
  int exit_code = 0;
};

int exit_code_of(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

// The CPUs this process may run on, in increasing order.
std::vector<int> usable_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) != 0) return cpus;
  for (int c = 0; c < CPU_SETSIZE; ++c)
    if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

void bind_to_cpu(int rank, int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    std::fprintf(stderr, "tpcoll run: rank %d left unbound: cannot bind it to CPU %d: %s\n", rank, cpu,
                 std::strerror(errno));
}

[[noreturn]] void exec_rank(const LaunchOptions& o, int rank, std::optional<int> cpu, const std::string& job,
                            int out_fd, int err_fd) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive the launcher
  if (cpu) bind_to_cpu(rank, *cpu);  // kept across exec
  setpgid(0, 0);                     // a group of its own, so stopping it stops its children too
  if (out_fd >= 0) dup2(out_fd, STDOUT_FILENO);
  if (err_fd >= 0) dup2(err_fd, STDERR_FILENO);
  setenv("TPCOLL_RANK", std::to_string(rank).c_str(), 1);
  setenv("TPCOLL_LOCAL_RANK", std::to_string(rank).c_str(), 1);
  setenv("TPCOLL_WORLD_SIZE", std::to_string(o.ranks).c_str(), 1);
  setenv("TPCOLL_JOB", job.c_str(), 1);
  for (const auto& [k, v] : o.environment) setenv(k.c_str(), v.c_str(), 1);
  _exit(launch_in_place(o.command));
}

}  // namespace

int launch_in_place(const std::vector<std::string>& command) {
  std::vector<char*> argv;
  for (const auto& a : command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::fflush(nullptr);
  execvp(argv[0], argv.data());
  std::fprintf(stderr, "tpcoll: cannot execute %s: %s\n", argv[0], std::strerror(errno));
  return 127;
}

std::vector<std::string> own_command_line(int argc, char** argv) {
  std::vector<std::string> args{std::filesystem::read_symlink("/proc/self/exe").string()};
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return args;
}

std::string fresh_job_id() {
  std::random_device rd;
  return fmt::format("job-{}-{:08x}", getpid(), rd());
}

int launch(const LaunchOptions& o) {
  if (o.ranks < 1) throw std::invalid_argument("tpcoll run: -n must be at least 1");
  if (o.command.empty()) throw std::invalid_argument("tpcoll run: no command given (tpcoll run -n N -- CMD ...)");
  const std::string job = fresh_job_id();

  struct sigaction sa {};
  sa.sa_handler = remember_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::fflush(nullptr);  // children must not inherit buffered output

  const std::vector<int> cpus = o.bind_cores ? usable_cpus() : std::vector<int>{};
  std::vector<Rank> ranks(o.ranks);
  std::vector<Stream> streams;
  for (int r = 0; r < o.ranks; ++r) {
    int out[2] = {-1, -1}, err[2] = {-1, -1};
    if (o.prefix_output && (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0))
      throw std::runtime_error(fmt::format("tpcoll run: pipe: {}", std::strerror(errno)));
    const pid_t pid = fork();
    if (pid < 0) throw std::runtime_error(fmt::format("tpcoll run: fork: {}", std::strerror(errno)));
    if (pid == 0)
      exec_rank(o, r, cpus.empty() ? std::nullopt : std::optional<int>(cpus[r % cpus.size()]), job, out[1], err[1]);
    // Also here, not only in the child: a rank that fails before a sibling
    // has run must still find the sibling's group to stop.
    setpgid(pid, pid);
    ranks[r] = Rank{pid, true, 0};
    if (o.prefix_output) {
      close(out[1]);
      close(err[1]);
      streams.push_back(Stream{out[0], stdout, fmt::format("[{}] ", r), {}});
      streams.push_back(Stream{err[0], stderr, fmt::format("[{}] ", r), {}});
    }
  }

  std::optional<int> failure;
  std::optional<std::chrono::steady_clock::time_point> kill_at;
  const auto grace = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(o.kill_grace_seconds));
  const auto stop_others = [&](int sig) {
    for (const Rank& r : ranks)
      if (r.running && kill(-r.pid, sig) != 0) kill(r.pid, sig);
  };

  int running = o.ranks;
  while (running > 0 || !streams.empty()) {
    std::vector<pollfd> fds;
    for (const Stream& s : streams) fds.push_back(pollfd{s.fd, POLLIN, 0});
    if (!fds.empty()) {
      poll(fds.data(), fds.size(), 20);
    } else {
      usleep(5000);
    }
    for (std::size_t i = fds.size(); i-- > 0;) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const ssize_t n = read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        streams[i].forward(buf, static_cast<std::size_t>(n));
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        streams[i].flush_tail();
        close(streams[i].fd);
        streams.erase(streams.begin() + static_cast<std::ptrdiff_t>(i));
      }
    }
    for (int r = 0; r < o.ranks; ++r) {
      if (!ranks[r].running) continue;
      int status = 0;
      if (waitpid(ranks[r].pid, &status, WNOHANG) != ranks[r].pid) continue;
      ranks[r].running = false;
      ranks[r].exit_code = exit_code_of(status);
      --running;
      if (ranks[r].exit_code != 0 && !failure) {
        failure = ranks[r].exit_code;
        std::fprintf(stderr, "tpcoll run: rank %d exited with code %d; stopping the other ranks\n", r,
                     ranks[r].exit_code);
        stop_others(SIGTERM);
        kill_at = std::chrono::steady_clock::now() + grace;
      }
    }
    if (g_forwarded_signal != 0) {
      stop_others(g_forwarded_signal);
      if (!failure) failure = 128 + g_forwarded_signal;
      kill_at = std::chrono::steady_clock::now() + grace;
      g_forwarded_signal = 0;
    }
    if (kill_at && std::chrono::steady_clock::now() >= *kill_at) {
      stop_others(SIGKILL);
      kill_at.reset();
    }
  }
  return failure.value_or(0);
}

}  // namespace tpcoll::tools
