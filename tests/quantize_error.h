// The one error line quantize_model gives for bad options or input, checking that no output was written.
#pragma once
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "lowbit/error.h"
#include "quant/quantize_model.h"

namespace lowbit::test {

// quantize_model(src, out, o) must throw lowbit::Error without creating out: its message ("" and a test failure
// if it does not throw).
inline std::string quantize_error(const std::string& src, const quant::QuantizeModelOptions& o, const std::string& out) {
  try {
    quant::quantize_model(src, out, o);
  } catch (const Error& e) {
    EXPECT_FALSE(std::filesystem::exists(out)) << "an output was written";
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

}  // namespace lowbit::test
