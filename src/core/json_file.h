// Reads and parses a JSON file; errors name the file ("cannot open", "invalid JSON: ...").
#pragma once
#include <string>

#include <nlohmann/json.hpp>

namespace lowbit {

nlohmann::json read_json_file(const std::string& path);

}  // namespace lowbit
