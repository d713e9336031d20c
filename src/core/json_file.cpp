#include "core/json_file.h"

#include <fstream>
#include <sstream>

#include "lowbit/error.h"

namespace lowbit {

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, "", "cannot open for reading");
  std::stringstream ss;
  ss << in.rdbuf();
  try {
    return nlohmann::json::parse(ss.str());
  } catch (const nlohmann::json::exception& e) {
    fail(path, "", std::string("invalid JSON: ") + e.what());
  }
}

}  // namespace lowbit
