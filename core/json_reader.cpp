// Strict JSON object reader and atomic file writing.
#include "core/json_reader.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "core/error.hpp"

namespace moetune {

namespace {

std::string describe(const Json& value) {
  std::string text = value.dump();
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return text;
}

}  // namespace

JsonObjectReader::JsonObjectReader(const Json& json, std::string path)
    : json_(json), path_(std::move(path)) {
  if (!json_.is_object()) {
    throw InputError(path_ + ": expected a JSON object, got " + describe(json_));
  }
}

bool JsonObjectReader::has(std::string_view key) const {
  return json_.contains(std::string(key));
}

std::string JsonObjectReader::key_path(std::string_view key) const {
  return path_.empty() ? std::string(key) : path_ + "." + std::string(key);
}

void JsonObjectReader::fail(std::string_view key, const std::string& what) const {
  throw InputError(key_path(key) + ": " + what);
}

const Json& JsonObjectReader::require(std::string_view key) {
  auto it = json_.find(std::string(key));
  if (it == json_.end()) fail(key, "missing key");
  read_.insert(std::string(key));
  return *it;
}

std::int64_t JsonObjectReader::get_int(std::string_view key, std::int64_t min, std::int64_t max) {
  const Json& v = require(key);
  if (!v.is_number_integer()) fail(key, "expected an integer, got " + describe(v));
  std::int64_t x = v.get<std::int64_t>();
  if (x < min || x > max) {
    fail(key, "must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                  std::to_string(x));
  }
  return x;
}

double JsonObjectReader::get_double(std::string_view key, double min, double max) {
  const Json& v = require(key);
  if (!v.is_number()) fail(key, "expected a number, got " + describe(v));
  double x = v.get<double>();
  if (!std::isfinite(x) || x < min || x > max) {
    std::ostringstream range;
    range << "must be in [" << min << ", " << max << "], got " << describe(v);
    fail(key, range.str());
  }
  return x;
}

bool JsonObjectReader::get_bool(std::string_view key) {
  const Json& v = require(key);
  if (!v.is_boolean()) fail(key, "expected true or false, got " + describe(v));
  return v.get<bool>();
}

std::string JsonObjectReader::get_string(std::string_view key) {
  const Json& v = require(key);
  if (!v.is_string()) fail(key, "expected a string, got " + describe(v));
  return v.get<std::string>();
}

std::string JsonObjectReader::get_enum(std::string_view key,
                                       const std::vector<std::string>& allowed) {
  std::string value = get_string(key);
  for (const auto& a : allowed) {
    if (a == value) return value;
  }
  std::string list;
  for (const auto& a : allowed)
    list += (list.empty() ? "" : ", ") + a;
  fail(key, "\"" + value + "\" is not one of {" + list + "}");
}

std::vector<std::int64_t> JsonObjectReader::get_int_list(std::string_view key, std::int64_t min,
                                                         std::int64_t max) {
  const Json& v = require(key);
  if (!v.is_array()) fail(key, "expected a list of integers, got " + describe(v));
  std::vector<std::int64_t> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const Json& e = v[i];
    if (!e.is_number_integer() || e.get<std::int64_t>() < min || e.get<std::int64_t>() > max) {
      fail(std::string(key) + "[" + std::to_string(i) + "]",
           "expected an integer in [" + std::to_string(min) + ", " + std::to_string(max) +
               "], got " + describe(e));
    }
    out.push_back(e.get<std::int64_t>());
  }
  return out;
}

JsonObjectReader JsonObjectReader::get_object(std::string_view key) {
  return JsonObjectReader(require(key), key_path(key));
}

const Json& JsonObjectReader::get_raw(std::string_view key) {
  return require(key);
}

void JsonObjectReader::expect_schema_version() {
  std::int64_t v = get_int("schema_version", 0, 1 << 20);
  if (v != kSchemaVersion) {
    fail("schema_version", "version " + std::to_string(v) +
                               " is not supported; this moetune reads " +
                               std::to_string(kSchemaVersion));
  }
}

void JsonObjectReader::finish() const {
  for (auto it = json_.begin(); it != json_.end(); ++it) {
    if (read_.count(it.key()) == 0) {
      std::string known;
      for (const auto& k : read_)
        known += (known.empty() ? "" : ", ") + k;
      throw InputError(key_path(it.key()) + ": unknown key; known keys: " + known);
    }
  }
}

Json parse_json_text(const std::string& text, const std::string& origin) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    // nlohmann's message carries line and column; drop its "[json.exception...]" prefix.
    std::string what = e.what();
    auto pos = what.find("] ");
    if (pos != std::string::npos) what = what.substr(pos + 2);
    throw InputError(origin + ": malformed JSON: " + what);
  }
}

Json read_json_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw InputError(file.string() + ": cannot open file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return parse_json_text(buffer.str(), file.string());
}

void write_file_atomically(const std::filesystem::path& file, const std::string& text) {
  namespace fs = std::filesystem;
  fs::path dir = file.has_parent_path() ? file.parent_path() : fs::path(".");
  std::string pattern = (dir / ("." + file.filename().string() + ".XXXXXX")).string();
  int fd = ::mkstemp(pattern.data());
  if (fd < 0) throw InputError(file.string() + ": cannot create a file in " + dir.string());
  // mkstemp makes the file private; give it the permissions an ordinary new file would get.
  mode_t mask = ::umask(0);
  ::umask(mask);
  ::fchmod(fd, 0666 & ~mask);
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      ::close(fd);
      ::unlink(pattern.c_str());
      throw InputError(file.string() + ": write failed");
    }
    done += static_cast<std::size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    ::unlink(pattern.c_str());
    throw InputError(file.string() + ": write failed");
  }
  std::error_code ec;
  fs::rename(pattern, file, ec);
  if (ec) {
    ::unlink(pattern.c_str());
    throw InputError(file.string() + ": cannot write: " + ec.message());
  }
}

}  // namespace moetune
