#include "lowbit/error.h"

namespace lowbit {

std::string format_error(const std::string& file, const std::string& field, int64_t offset,
                         const std::string& message) {
  std::string s = file.empty() ? std::string("lowbit") : file;
  if (!field.empty()) s += ": " + field;
  if (offset >= 0) s += " at offset " + std::to_string(offset);
  s += ": " + message;
  // One line: fold any newline a message might carry.
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  return s;
}

void fail(const std::string& file, const std::string& field, const std::string& message) {
  throw Error(format_error(file, field, -1, message), message);
}

void fail_at(const std::string& file, const std::string& field, int64_t offset, const std::string& message) {
  throw Error(format_error(file, field, offset, message), message);
}

}  // namespace lowbit
