#include "bootstrap/job_dir.hpp"

#include "core/config.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <cstring>
#include <vector>

namespace tpcoll {
namespace {

constexpr const char* kSocketName = "sock";
constexpr const char* kTokenName = "token";
constexpr std::string_view kTempPrefix = ".tmp-";

// FNV-1a: stable across binaries, unlike std::hash.
std::uint64_t fnv1a(const std::string& s) {
  std::uint64_t h = 1469598103934665603ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

void check_private(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) fail_errno("bootstrap: rendezvous directory {}", dir);
  if (!S_ISDIR(st.st_mode))
    fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: rendezvous directory {} is not a directory (a link?): refusing it", dir);
  if (st.st_uid != ::geteuid())
    fail(TPCOLL_BOOTSTRAP_ERROR,
         "bootstrap: rendezvous directory {} belongs to uid {}, not to this user ({}): refusing it (TPCOLL_RUN_DIR "
         "chooses another)",
         dir, st.st_uid, ::geteuid());
  if ((st.st_mode & 077) != 0)
    fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: rendezvous directory {} has mode {:04o}; it must be 0700 (private)", dir,
         st.st_mode & 07777);
}

wire::Token random_token() {
  wire::Token token{};
  std::size_t got = 0;
  while (got < token.size()) {
    const ssize_t n = ::getrandom(token.data() + got, token.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("bootstrap: getrandom for the job token");
    }
    got += static_cast<std::size_t>(n);
  }
  return token;
}

void write_new_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) fail_errno("bootstrap: creating {}", path);
  const ssize_t put = ::write(fd, text.data(), text.size());
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (put != static_cast<ssize_t>(text.size())) fail_errno("bootstrap: writing {}", path);
}

std::optional<std::string> read_small_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  char buf[128];
  const ssize_t got = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (got <= 0) return std::nullopt;
  return std::string(buf, static_cast<std::size_t>(got));
}

std::optional<pid_t> parse_pid(std::string_view text) {
  long pid = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), pid);
  if (ec != std::errc() || end == text.data() || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

struct TokenFile {
  pid_t pid;
  wire::Token token;
};

// "<pid> <32 hex digits>\n", as JobDir writes it.
std::optional<TokenFile> parse_token_file(const std::string& text) {
  const std::size_t space = text.find(' ');
  if (space == std::string::npos || text.size() < space + 1 + 2 * sizeof(wire::Token)) return std::nullopt;
  const std::optional<pid_t> pid = parse_pid(std::string_view(text).substr(0, space));
  if (!pid) return std::nullopt;
  TokenFile file{*pid, {}};
  for (std::size_t i = 0; i < file.token.size(); ++i) {
    const char* digits = text.data() + space + 1 + 2 * i;
    const auto [end, ec] = std::from_chars(digits, digits + 2, file.token[i], 16);
    if (ec != std::errc() || end != digits + 2) return std::nullopt;
  }
  return file;
}

// Our layout only: the socket, the token, the directory.
void remove_job_dir(const std::string& dir) {
  ::unlink((dir + "/" + kSocketName).c_str());
  ::unlink((dir + "/" + kTokenName).c_str());
  ::rmdir(dir.c_str());
}

// The process an entry of the run directory belongs to, if it can be told:
// a half-made directory names it, a finished one has its token file.
std::optional<pid_t> owner_of(const std::string& run_dir, const std::string& name) {
  if (name.starts_with(kTempPrefix)) return parse_pid(std::string_view(name).substr(kTempPrefix.size()));
  const std::optional<std::string> text = read_small_file(run_dir + "/" + name + "/" + kTokenName);
  if (!text) return std::nullopt;
  const std::optional<TokenFile> file = parse_token_file(*text);
  if (!file) return std::nullopt;
  return file->pid;
}

}  // namespace

sockaddr_un socket_address_in(const std::string& dir) {
  const std::string path = dir + "/" + kSocketName;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    fail(TPCOLL_INVALID_ARGUMENT,
         "bootstrap: the rendezvous socket {} is longer than the {} bytes a Unix socket path may have: choose a "
         "shorter TPCOLL_RUN_DIR",
         path, sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

std::string hex(const wire::Token& token) {
  std::string out;
  for (std::uint8_t b : token) out += fmt::format("{:02x}", b);
  return out;
}

std::string private_run_dir() {
  const std::string configured = env::kRunDir.value();
  const std::string dir = configured.empty() ? fmt::format("/tmp/tpcoll-{}", ::geteuid()) : configured;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) fail_errno("bootstrap: creating {}", dir);
  check_private(dir);
  return dir;
}

std::string job_dir_path(const std::string& run_dir, const std::string& key) {
  return fmt::format("{}/{:016x}", run_dir, fnv1a(key));
}

int remove_stale_job_dirs(const std::string& run_dir) {
  DIR* dir = ::opendir(run_dir.c_str());
  if (dir == nullptr) return 0;
  std::vector<std::pair<std::string, pid_t>> stale;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    const std::optional<pid_t> owner = owner_of(run_dir, name);
    if (owner && !process_alive(*owner)) stale.emplace_back(name, *owner);
  }
  ::closedir(dir);
  for (const auto& [name, pid] : stale) {
    remove_job_dir(run_dir + "/" + name);
    log(LogLevel::kInfo, "bootstrap", "removed the rendezvous {}/{} of process {}, which is gone", run_dir, name, pid);
  }
  return static_cast<int>(stale.size());
}

JobDir::JobDir(const std::string& key, int listen_backlog) : token_(random_token()) {
  const std::string run_dir = private_run_dir();
  remove_stale_job_dirs(run_dir);
  path_ = job_dir_path(run_dir, key);
  const std::string temp = fmt::format("{}/{}{}-{}", run_dir, kTempPrefix, ::getpid(), hex(token_).substr(0, 8));
  const sockaddr_un addr = socket_address_in(temp);
  if (::mkdir(temp.c_str(), 0700) != 0) fail_errno("bootstrap: creating {}", temp);
  try {
    write_new_file(temp + "/" + kTokenName, fmt::format("{} {}\n", ::getpid(), hex(token_)));
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener_ < 0) fail_errno("bootstrap: socket");
    if (::bind(listener_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
      fail_errno("bootstrap: bind {}", addr.sun_path);
    if (::listen(listener_, listen_backlog) != 0) fail_errno("bootstrap: listen");
    // A directory already there is another rank 0's: a live one is a
    // duplicate rank 0, a dead one's is stale and goes.
    for (int attempt = 0; ::rename(temp.c_str(), path_.c_str()) != 0; ++attempt) {
      if ((errno != EEXIST && errno != ENOTEMPTY) || attempt == 3) fail_errno("bootstrap: renaming {}", temp);
      const std::string name = path_.substr(run_dir.size() + 1);
      if (const std::optional<pid_t> owner = owner_of(run_dir, name); owner && process_alive(*owner))
        fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: another rank 0 (process {}) already serves job {:?} (duplicate rank 0?)",
             *owner, key);
      remove_job_dir(path_);
    }
    present_ = true;
  } catch (...) {
    if (listener_ >= 0) ::close(listener_);
    remove_job_dir(temp);
    throw;
  }
}

JobDir::~JobDir() {
  remove();
  ::close(listener_);
}

void JobDir::remove() {
  if (present_) remove_job_dir(path_);
  present_ = false;
}

std::optional<wire::Token> read_job_token(const std::string& job_dir) {
  check_private(job_dir.substr(0, job_dir.rfind('/')));
  const std::optional<std::string> text = read_small_file(job_dir + "/" + kTokenName);
  if (!text) return std::nullopt;
  const std::optional<TokenFile> file = parse_token_file(*text);
  if (!file) fail(TPCOLL_BOOTSTRAP_ERROR, "bootstrap: {}/{} is not a token file", job_dir, kTokenName);
  return file->token;
}

}  // namespace tpcoll
