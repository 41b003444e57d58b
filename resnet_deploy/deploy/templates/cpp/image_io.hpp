// Input loading for the C++ example, without any image library (no OpenCV, no stb):
//   .npy  float32 tensor [N,3,H,W] or [3,H,W] as written by `python3 infer.py --save-input x.npy img.jpg`
//   .raw  float32 little-endian values of one preprocessed [3,H,W] image
//   .ppm  binary P6 RGB image of exactly HxW pixels (the centre crop, `infer.py --save-ppm x.ppm img.jpg`),
//         normalised here with the same float32 arithmetic as the Python preprocessing.
// Written by resnet-deploy @@TOOLKIT_VERSION@@. TensorRT-free, so it can be tested on its own.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace bundle {

// Preprocessing of this bundle (from manifest.json).
constexpr int kImageSize = @@IMAGE_SIZE@@;
constexpr float kMean[3] = {@@MEAN@@};
constexpr float kStd[3] = {@@STD@@};

inline bool endsWith(const std::string& s, const std::string& suffix)
{
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

inline std::vector<char> readFile(const std::string& path)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
    {
        throw std::runtime_error("cannot open " + path);
    }
    return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

// One [3,H,W] float32 image, channel-major (NCHW without the N).
inline std::vector<float> loadRaw(const std::string& path, int c, int h, int w)
{
    std::vector<char> bytes = readFile(path);
    size_t const want = static_cast<size_t>(c) * h * w * sizeof(float);
    if (bytes.size() != want)
    {
        throw std::runtime_error(path + " has " + std::to_string(bytes.size()) + " bytes; a " + std::to_string(c) + "x"
            + std::to_string(h) + "x" + std::to_string(w) + " float32 image has " + std::to_string(want));
    }
    std::vector<float> out(static_cast<size_t>(c) * h * w);
    std::memcpy(out.data(), bytes.data(), want);
    return out;
}

// The first image of a little-endian float32 C-order .npy ([N,3,H,W] or [3,H,W]).
inline std::vector<float> loadNpy(const std::string& path, int c, int h, int w)
{
    std::vector<char> bytes = readFile(path);
    if (bytes.size() < 10 || std::memcmp(bytes.data(), "\x93NUMPY", 6) != 0)
    {
        throw std::runtime_error(path + " is not a .npy file");
    }
    int const major = static_cast<unsigned char>(bytes[6]);
    size_t headerLen = 0;
    size_t offset = 0;
    if (major == 1)
    {
        headerLen = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
        offset = 10;
    }
    else
    {
        if (bytes.size() < 12)
        {
            throw std::runtime_error(path + " is truncated");
        }
        headerLen = static_cast<size_t>(static_cast<unsigned char>(bytes[8]))
            | (static_cast<size_t>(static_cast<unsigned char>(bytes[9])) << 8)
            | (static_cast<size_t>(static_cast<unsigned char>(bytes[10])) << 16)
            | (static_cast<size_t>(static_cast<unsigned char>(bytes[11])) << 24);
        offset = 12;
    }
    if (offset + headerLen > bytes.size())
    {
        throw std::runtime_error(path + " is truncated");
    }
    std::string const header(bytes.data() + offset, headerLen);
    if (header.find("'descr': '<f4'") == std::string::npos)
    {
        throw std::runtime_error(path + " must hold little-endian float32 ('<f4'): " + header);
    }
    if (header.find("'fortran_order': False") == std::string::npos)
    {
        throw std::runtime_error(path + " must be C-ordered");
    }
    size_t const per = static_cast<size_t>(c) * h * w;
    size_t const data = offset + headerLen;
    size_t const available = (bytes.size() - data) / sizeof(float);
    if (available < per || available % per != 0)
    {
        throw std::runtime_error(path + " does not hold " + std::to_string(c) + "x" + std::to_string(h) + "x"
            + std::to_string(w) + " float32 images: " + header);
    }
    std::vector<float> out(per);
    std::memcpy(out.data(), bytes.data() + data, per * sizeof(float));
    return out;
}

// Binary PPM (P6, maxval 255) of exactly h x w pixels -> normalised [3,h,w] float32.
inline std::vector<float> loadPpm(const std::string& path, int h, int w)
{
    std::vector<char> bytes = readFile(path);
    size_t pos = 0;
    auto token = [&]() {
        std::string t;
        while (pos < bytes.size())
        {
            char const ch = bytes[pos];
            if (ch == '#')
            {
                while (pos < bytes.size() && bytes[pos] != '\n')
                {
                    ++pos;
                }
            }
            else if (std::isspace(static_cast<unsigned char>(ch)))
            {
                if (!t.empty())
                {
                    break;
                }
                ++pos;
            }
            else
            {
                t.push_back(ch);
                ++pos;
            }
        }
        return t;
    };
    if (token() != "P6")
    {
        throw std::runtime_error(path + " is not a binary PPM (P6)");
    }
    int const width = std::stoi(token());
    int const height = std::stoi(token());
    int const maxval = std::stoi(token());
    ++pos; // the single whitespace after maxval
    if (maxval != 255)
    {
        throw std::runtime_error(path + ": only 8-bit PPM (maxval 255) is supported");
    }
    if (width != w || height != h)
    {
        throw std::runtime_error(path + " is " + std::to_string(width) + "x" + std::to_string(height) + "; give the "
            + std::to_string(w) + "x" + std::to_string(h) + " centre crop (python3 infer.py --save-ppm crop.ppm photo.jpg)");
    }
    size_t const n = static_cast<size_t>(w) * h;
    if (bytes.size() < pos + 3 * n)
    {
        throw std::runtime_error(path + " is truncated");
    }
    std::vector<float> out(3 * n);
    for (size_t i = 0; i < n; ++i)
    {
        for (int ch = 0; ch < 3; ++ch)
        {
            float const v = static_cast<float>(static_cast<unsigned char>(bytes[pos + 3 * i + ch])) / 255.0F;
            out[ch * n + i] = (v - kMean[ch]) / kStd[ch];
        }
    }
    return out;
}

inline std::vector<float> loadInput(const std::string& path, int c, int h, int w)
{
    if (endsWith(path, ".npy"))
    {
        return loadNpy(path, c, h, w);
    }
    if (endsWith(path, ".raw") || endsWith(path, ".bin"))
    {
        return loadRaw(path, c, h, w);
    }
    if (endsWith(path, ".ppm"))
    {
        if (c != 3)
        {
            throw std::runtime_error("PPM input needs a 3-channel model");
        }
        return loadPpm(path, h, w);
    }
    throw std::runtime_error(path + ": give a .npy, .raw or .ppm file (see README.md)");
}

inline std::vector<std::string> readLabels(const std::string& path)
{
    std::ifstream f(path);
    if (!f)
    {
        throw std::runtime_error("cannot open label file " + path);
    }
    std::vector<std::string> labels;
    std::string line;
    while (std::getline(f, line))
    {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' '))
        {
            line.pop_back();
        }
        labels.push_back(line);
    }
    while (!labels.empty() && labels.back().empty())
    {
        labels.pop_back();
    }
    return labels;
}

} // namespace bundle
