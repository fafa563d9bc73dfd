// Byte-level helpers shared by the executor's file formats: little-endian integers, whole-file
// reads, atomic writes (temporary file in the same folder, fsync, rename, fsync of the folder) and
// CRC-32C, the checksum of checkpoints.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace moetune::executor {

// Every format here is little-endian and read by memcpy, so the host must be too.
static_assert(std::endian::native == std::endian::little,
              "moetune's file formats need a little-endian host");

// Appends the little-endian bytes of `value` to `out`.
template <typename T>
void append_le(std::string& out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.append(bytes, sizeof(T));
}

// Reads a little-endian `T` at `offset` of `bytes`; the caller has checked the range.
template <typename T>
T load_le(std::string_view bytes, std::size_t offset) {
  T value;
  std::memcpy(&value, bytes.data() + offset, sizeof(T));
  return value;
}

// The whole file as bytes; InputError naming the file when it is missing or unreadable.
std::string read_file_bytes(const std::filesystem::path& file);

// Reads `size` bytes at `offset` of an open-by-name file into `out`; InputError when short.
void read_file_range(const std::filesystem::path& file, std::uint64_t offset, std::uint64_t size,
                     void* out);

// Writes a file so that readers see either the old content or the whole new content, never a
// part: bytes go to a temporary file in the same folder, which is fsynced and renamed over `file`
// on commit(). Destroying the writer without commit() removes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path file);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, std::size_t size);
  void write(std::string_view bytes) { write(bytes.data(), bytes.size()); }
  std::uint64_t bytes_written() const { return written_; }
  // fsync, rename over the target, fsync the folder.
  void commit();

 private:
  std::filesystem::path file_;
  std::string temp_;
  int fd_ = -1;
  std::uint64_t written_ = 0;
};

// Writes `bytes` to a new file (no rename; for files inside a folder that is itself renamed into
// place) and fsyncs it.
void write_file_synced(const std::filesystem::path& file, std::string_view bytes);

// fsync of a folder, so that renames and new entries in it survive a crash.
void fsync_directory(const std::filesystem::path& dir);

// CRC-32C (Castagnoli polynomial 0x1EDC6F41, reflected 0x82F63B78), as used by iSCSI, ext4 and
// Google's formats; crc32c("123456789") == 0xE3069283. `crc` continues an earlier value.
std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0);
// "0x1a2b3c4d": how checksums appear in JSON.
std::string crc32c_hex(std::uint32_t crc);

}  // namespace moetune::executor
