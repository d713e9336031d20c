// lowbit: errors. Every rejected input becomes one lowbit::Error whose what() is a single line
// naming the file, the field and what was expected ("FILE: FIELD at offset N: MESSAGE").
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace lowbit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg), message_(msg) {}
  // what() is the whole line; message() only its MESSAGE part, for a caller that restates the error in its own
  // terms (its own file and field) without repeating the inner one's.
  Error(const std::string& line, const std::string& message) : std::runtime_error(line), message_(message) {}
  const std::string& message() const { return message_; }

 private:
  std::string message_;
};

// Builds "file: field at offset N: message" (offset omitted when < 0, field omitted when empty).
std::string format_error(const std::string& file, const std::string& field, int64_t offset,
                         const std::string& message);

[[noreturn]] void fail(const std::string& file, const std::string& field, const std::string& message);
[[noreturn]] void fail_at(const std::string& file, const std::string& field, int64_t offset,
                          const std::string& message);

}  // namespace lowbit
