// Byte-level helpers: whole-file and ranged reads, atomic writes, fsync of folders, CRC-32C.
#include "executor/io/binary_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <fstream>

#include "core/error.hpp"

namespace moetune::executor {

namespace fs = std::filesystem;

namespace {

std::string errno_text() {
  return std::strerror(errno);
}

void write_all(int fd, const void* data, std::size_t size, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw InputError(what + ": write failed: " + errno_text());
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

// Slicing-by-8 tables for CRC-32C: table[0] is the classic byte table, table[k][b] is the CRC of
// byte b followed by k zero bytes, so eight input bytes are folded per step.
using CrcTables = std::array<std::array<std::uint32_t, 256>, 8>;

constexpr CrcTables make_crc_tables() {
  CrcTables t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int k = 0; k < 8; ++k)
      c = (c & 1U) != 0 ? (c >> 1) ^ 0x82F63B78U : c >> 1;
    t[0][b] = c;
  }
  for (std::size_t b = 0; b < 256; ++b) {
    for (std::size_t k = 1; k < 8; ++k)
      t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xFFU];
  }
  return t;
}

constexpr CrcTables kCrcTables = make_crc_tables();

}  // namespace

std::string read_file_bytes(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec)) throw InputError(file.string() + ": no such file");
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string() + ": cannot open for reading");
  const auto size = fs::file_size(file, ec);
  if (ec) throw InputError(file.string() + ": cannot read its size: " + ec.message());
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::uint64_t>(in.gcount()) != size) {
    throw InputError(file.string() + ": read failed");
  }
  return bytes;
}

void read_file_range(const fs::path& file, std::uint64_t offset, std::uint64_t size, void* out) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw InputError(file.string() + ": cannot open for reading: " + errno_text());
  char* p = static_cast<char*>(out);
  std::uint64_t done = 0;
  while (done < size) {
    ssize_t n = ::pread(fd, p + done, size - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ::close(fd);
      throw InputError(file.string() + ": file ends before byte " + std::to_string(offset + size) +
                       " (truncated?)");
    }
    done += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
}

AtomicFileWriter::AtomicFileWriter(fs::path file) : file_(std::move(file)) {
  const fs::path dir = file_.has_parent_path() ? file_.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw InputError(file_.string() + ": folder " + dir.string() + " does not exist");
  }
  temp_ = (dir / ("." + file_.filename().string() + ".tmp-XXXXXX")).string();
  fd_ = ::mkstemp(temp_.data());
  if (fd_ < 0) throw InputError(file_.string() + ": cannot create a file in " + dir.string());
  // mkstemp makes the file private; give it the permissions an ordinary new file would get.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd_, 0666 & ~mask);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, std::size_t size) {
  MOETUNE_CHECK(fd_ >= 0, "write after commit");
  write_all(fd_, data, size, file_.string());
  written_ += size;
}

void AtomicFileWriter::commit() {
  MOETUNE_CHECK(fd_ >= 0, "commit twice");
  const int fd = fd_;
  fd_ = -1;
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(temp_.c_str());
    throw InputError(file_.string() + ": write failed: " + errno_text());
  }
  if (std::rename(temp_.c_str(), file_.c_str()) != 0) {
    const std::string why = errno_text();
    ::unlink(temp_.c_str());
    throw InputError(file_.string() + ": cannot write: " + why);
  }
  fsync_directory(file_.has_parent_path() ? file_.parent_path() : fs::path("."));
}

void write_file_synced(const fs::path& file, std::string_view bytes) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) throw InputError(file.string() + ": cannot create: " + errno_text());
  try {
    write_all(fd, bytes.data(), bytes.size(), file.string());
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    throw InputError(file.string() + ": write failed: " + errno_text());
  }
}

void fsync_directory(const fs::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw InputError(dir.string() + ": cannot open folder: " + errno_text());
  // Some file systems refuse fsync on folders (EINVAL); the data itself is already synced.
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL && err != EROFS) {
    throw InputError(dir.string() + ": fsync of folder failed: " + std::strerror(err));
  }
}

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) {
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (size >= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    word ^= crc;
    crc = kCrcTables[7][word & 0xFF] ^ kCrcTables[6][(word >> 8) & 0xFF] ^
          kCrcTables[5][(word >> 16) & 0xFF] ^ kCrcTables[4][(word >> 24) & 0xFF] ^
          kCrcTables[3][(word >> 32) & 0xFF] ^ kCrcTables[2][(word >> 40) & 0xFF] ^
          kCrcTables[1][(word >> 48) & 0xFF] ^ kCrcTables[0][word >> 56];
    p += 8;
    size -= 8;
  }
  while (size-- > 0)
    crc = (crc >> 8) ^ kCrcTables[0][(crc ^ *p++) & 0xFF];
  return ~crc;
}

std::string crc32c_hex(std::uint32_t crc) {
  char text[11];
  std::snprintf(text, sizeof text, "0x%08x", crc);
  return text;
}

}  // namespace moetune::executor
