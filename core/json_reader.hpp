// Strict reading of JSON objects: every key is required unless asked for as optional, unknown keys
// are rejected, and every error names the key's full path ("cluster.intra_node.bandwidth_GBps").
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace moetune {

using Json = nlohmann::ordered_json;

// The schema version every moetune JSON document carries.
inline constexpr int kSchemaVersion = 1;

class JsonObjectReader {
 public:
  // `path` names the object in error messages ("plan.json: model").
  JsonObjectReader(const Json& json, std::string path);

  const std::string& path() const { return path_; }
  bool has(std::string_view key) const;

  // Required values. Numbers are checked for type, finiteness and range.
  std::int64_t get_int(std::string_view key, std::int64_t min, std::int64_t max);
  double get_double(std::string_view key, double min, double max);
  bool get_bool(std::string_view key);
  std::string get_string(std::string_view key);
  // One of `allowed`; the error lists them.
  std::string get_enum(std::string_view key, const std::vector<std::string>& allowed);
  std::vector<std::int64_t> get_int_list(std::string_view key, std::int64_t min, std::int64_t max);
  JsonObjectReader get_object(std::string_view key);
  const Json& get_raw(std::string_view key);

  // Checks `schema_version` equals kSchemaVersion.
  void expect_schema_version();

  // Throws if any key was never read: "model.hidden_sise: unknown key; known keys: ...".
  void finish() const;

  [[noreturn]] void fail(std::string_view key, const std::string& what) const;

 private:
  const Json& require(std::string_view key);
  std::string key_path(std::string_view key) const;

  const Json& json_;
  std::string path_;
  std::set<std::string, std::less<>> read_;
};

// Reads a whole file as JSON; a syntax error names the file, line and column.
Json read_json_file(const std::filesystem::path& file);
// Parses text as JSON; `origin` names it in errors.
Json parse_json_text(const std::string& text, const std::string& origin);

// Writes text to `file` atomically (temporary file in the same folder, flush, rename), so a failed
// write never leaves a half-written file behind.
void write_file_atomically(const std::filesystem::path& file, const std::string& text);

}  // namespace moetune
