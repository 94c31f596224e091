// Star-shaped rendezvous: rank 0 listens on a Unix-domain socket in the job's
// private directory (job_dir.hpp), every other rank connects, reads the job's
// token there and says hello; an all-gather sends each contribution to rank
// 0, which checks it and sends the concatenation back. Every frame carries
// the token and is checked (wire.hpp); every read and write is bounded by a
// deadline.
#include "bootstrap/bootstrap.hpp"
#include "bootstrap/job_dir.hpp"
#include "bootstrap/wire.hpp"

#include "common/deadline.hpp"
#include "core/error.hpp"

#include <fmt/ranges.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <optional>
#include <thread>
#include <vector>

namespace tpcoll {
namespace {

using wire::FrameHeader;
using wire::FrameKind;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

bool wait_ready(int fd, short events, const Deadline& deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int rc = ::poll(&p, 1, deadline.remaining_ms());
    if (rc > 0) return true;
    if (rc == 0) return false;
    if (errno != EINTR) fail_errno("bootstrap: poll failed");
  }
}

// Reads exactly n bytes; `who` names the peer in errors.
void read_exact(int fd, void* buf, std::size_t n, const Deadline& deadline, const std::string& who) {
  auto* p = static_cast<char*>(buf);
  while (n > 0) {
    if (!wait_ready(fd, POLLIN, deadline))
      fail(TPCOLL_TIMEOUT, "bootstrap: {} sent nothing within {} ms", who, deadline.timeout_ms());
    const ssize_t got = ::recv(fd, p, n, 0);
    if (got == 0) fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: {} closed the connection (did it exit?)", who);
    if (got < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      fail_errno("bootstrap: reading from {}", who);
    }
    p += got;
    n -= static_cast<std::size_t>(got);
  }
}

void write_exact(int fd, const void* buf, std::size_t n, const Deadline& deadline, const std::string& who) {
  const auto* p = static_cast<const char*>(buf);
  while (n > 0) {
    if (!wait_ready(fd, POLLOUT, deadline))
      fail(TPCOLL_TIMEOUT, "bootstrap: {} accepted nothing within {} ms", who, deadline.timeout_ms());
    const ssize_t put = ::send(fd, p, n, MSG_NOSIGNAL);
    if (put < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      fail_errno("bootstrap: writing to {}", who);
    }
    p += put;
    n -= static_cast<std::size_t>(put);
  }
}

void send_frame(int fd, FrameKind kind, int rank, int world, const wire::Token& token, const void* payload,
                std::size_t length, const Deadline& deadline, const std::string& who) {
  const FrameHeader h = wire::make_header(kind, rank, world, length, token);
  write_exact(fd, &h, sizeof h, deadline, who);
  if (length > 0) write_exact(fd, payload, length, deadline, who);
}

// Reads a header and checks what every frame must satisfy.
FrameHeader read_header(int fd, const wire::Token& token, const Deadline& deadline, const std::string& who) {
  std::array<std::byte, sizeof(FrameHeader)> bytes;
  read_exact(fd, bytes.data(), bytes.size(), deadline, who);
  const FrameHeader h = wire::decode_header(bytes);
  wire::check_header(h, token, who);
  return h;
}

std::string read_error_payload(int fd, std::uint64_t length, const Deadline& deadline, const std::string& who) {
  std::string message(std::min(length, wire::kMaxErrorMessage), '\0');
  read_exact(fd, message.data(), message.size(), deadline, who);
  return message;
}

class SocketBootstrap final : public Bootstrap {
 public:
  SocketBootstrap(int rank, int world, const std::string& key, std::int64_t timeout_ms)
      : Bootstrap(rank, world), key_(key), timeout_ms_(timeout_ms) {
    const Deadline deadline(timeout_ms);
    if (rank == 0)
      accept_peers(deadline);
    else
      connect_root(deadline);
  }

  void set_timeout_ms(std::int64_t timeout_ms) override { timeout_ms_ = timeout_ms; }

  // Shutting the connections down wakes this rank's poll() at once (the
  // read or write then fails) and shows every peer a closed connection.
  void abort(const std::string&) override {
    for (const Fd& peer : peers_)
      if (peer.get() >= 0) ::shutdown(peer.get(), SHUT_RDWR);
    if (root_.get() >= 0) ::shutdown(root_.get(), SHUT_RDWR);
  }

  void all_gather(const void* send, void* recv, std::size_t bytes) override {
    const Deadline deadline(timeout_ms_);
    if (rank() == 0)
      gather_at_root(send, static_cast<char*>(recv), bytes, deadline);
    else
      gather_at_peer(send, recv, bytes, deadline);
  }

 private:
  void accept_peers(const Deadline& deadline) {
    if (world() == 1) return;
    JobDir dir(key_, world());
    token_ = dir.token();
    peers_.resize(static_cast<std::size_t>(world()));
    int arrived = 1;
    while (arrived < world()) {
      if (!wait_ready(dir.listener(), POLLIN, deadline)) {
        std::vector<int> missing;
        for (int r = 1; r < world(); ++r)
          if (peers_[r].get() < 0) missing.push_back(r);
        fail(TPCOLL_TIMEOUT, "bootstrap: rank(s) {} of {} did not reach the rendezvous of job {:?} within {} ms",
             fmt::join(missing, ", "), world(), key_, deadline.timeout_ms());
      }
      Fd conn(::accept4(dir.listener(), nullptr, nullptr, SOCK_CLOEXEC));
      if (conn.get() < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        fail_errno("bootstrap: accept");
      }
      const int rank = wire::check_hello(read_header(conn.get(), token_, deadline, "a connecting process"), world());
      if (peers_[rank].get() >= 0) fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: two processes claim rank {}", rank);
      peers_[rank] = std::move(conn);
      ++arrived;
    }
  }

  void connect_root(const Deadline& deadline) {
    const std::string dir = job_dir_path(private_run_dir(), key_);
    const sockaddr_un addr = socket_address_in(dir);
    for (;;) {
      Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (fd.get() < 0) fail_errno("bootstrap: socket");
      if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) {
        root_ = std::move(fd);
        break;
      }
      if (errno != ECONNREFUSED && errno != ENOENT && errno != EAGAIN && errno != EINTR)
        fail_errno("bootstrap: connecting to rank 0 of job {:?} at {}", key_, addr.sun_path);
      if (deadline.expired())
        fail(TPCOLL_TIMEOUT, "bootstrap: rank {} could not reach rank 0 of job {:?} within {} ms", rank(), key_,
             deadline.timeout_ms());
      std::this_thread::sleep_for(std::chrono::milliseconds(2));  // rank 0 may not be listening yet
    }
    // Rank 0 keeps its directory until every peer has said hello, and the
    // directory appeared with its token: connected, the token is there.
    const std::optional<wire::Token> token = read_job_token(dir);
    if (!token) fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: rank 0 of job {:?} listens but left no token in {}", key_, dir);
    token_ = *token;
    send_frame(root_.get(), FrameKind::kHello, rank(), world(), token_, nullptr, 0, deadline, "rank 0");
  }

  void gather_at_root(const void* send, char* recv, std::size_t bytes, const Deadline& deadline) {
    if (bytes > 0) std::memcpy(recv, send, bytes);
    std::string error;
    for (int r = 1; r < world() && error.empty(); ++r) {
      const std::string who = fmt::format("rank {}", r);
      const FrameHeader h = read_header(peers_[r].get(), token_, deadline, who);
      error = wire::describe_bad_gather(h, r, bytes);
      if (error.empty() && bytes > 0)
        read_exact(peers_[r].get(), recv + static_cast<std::size_t>(r) * bytes, bytes, deadline, who);
    }
    for (int r = 1; r < world(); ++r) {
      const std::string who = fmt::format("rank {}", r);
      if (error.empty())
        send_frame(peers_[r].get(), FrameKind::kResult, 0, world(), token_, recv, bytes * world(), deadline, who);
      else
        send_frame(peers_[r].get(), FrameKind::kError, 0, world(), token_, error.data(), error.size(), deadline, who);
    }
    if (!error.empty()) throw Error(TPCOLL_BOOTSTRAP_ERROR, error);
  }

  void gather_at_peer(const void* send, void* recv, std::size_t bytes, const Deadline& deadline) {
    const std::uint64_t total = std::uint64_t{bytes} * world();
    try {
      send_frame(root_.get(), FrameKind::kGather, rank(), world(), token_, send, bytes, deadline, "rank 0");
    } catch (const Error&) {
      // Rank 0 may have failed this exchange and closed before our frame
      // arrived; its error frame, if it sent one, says why.
      const FrameHeader h = read_header(root_.get(), token_, deadline, "rank 0");
      if (wire::check_answer(h, total))
        throw Error(TPCOLL_BOOTSTRAP_ERROR, read_error_payload(root_.get(), h.length, deadline, "rank 0"));
      throw;
    }
    const FrameHeader h = read_header(root_.get(), token_, deadline, "rank 0");
    if (wire::check_answer(h, total))
      throw Error(TPCOLL_BOOTSTRAP_ERROR, read_error_payload(root_.get(), h.length, deadline, "rank 0"));
    if (bytes > 0) read_exact(root_.get(), recv, total, deadline, "rank 0");
  }

  std::string key_;
  std::int64_t timeout_ms_;
  std::vector<Fd> peers_;  // rank 0: one connection per peer (index 0 unused)
  Fd root_;                // other ranks: the connection to rank 0
  wire::Token token_{};    // this job's, in every frame both ways
};

}  // namespace

std::unique_ptr<Bootstrap> connect_socket_bootstrap(int rank, int world, const std::string& key,
                                                    std::int64_t timeout_ms) {
  return std::make_unique<SocketBootstrap>(rank, world, key, timeout_ms);
}

}  // namespace tpcoll
