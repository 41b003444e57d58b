// Classify one image with the bundle's TensorRT engine (TensorRT 10.x C++ API, JetPack 6).
//
//   ./classify ../@@ENGINE_FILE@@ crop.ppm [../labels.txt] [--dla N]
//
// The input is a preprocessed tensor (.npy / .raw) or the centre-cropped PPM that
// `python3 infer.py --save-ppm crop.ppm photo.jpg` writes; see image_io.hpp and README.md.
// Written by resnet-deploy @@TOOLKIT_VERSION@@ for @@ARCH@@ (@@PRECISION@@).
#include "image_io.hpp"

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

namespace {

class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << msg << "\n";
        }
    }
};

void check(cudaError_t status, char const* what)
{
    if (status != cudaSuccess)
    {
        throw std::runtime_error(std::string(what) + " failed: " + cudaGetErrorString(status));
    }
}

size_t volume(nvinfer1::Dims const& d)
{
    size_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= static_cast<size_t>(d.d[i]);
    }
    return v;
}

} // namespace

int main(int argc, char** argv)
{
    if (argc < 3)
    {
        std::cerr << "usage: " << argv[0] << " ENGINE INPUT(.npy|.raw|.ppm) [LABELS] [--dla N]\n";
        return 2;
    }
    std::string const enginePath = argv[1];
    std::string const inputPath = argv[2];
    std::string labelsPath = "../labels.txt";
    int dlaCore = -1;
    for (int i = 3; i < argc; ++i)
    {
        std::string const arg = argv[i];
        if (arg == "--dla" && i + 1 < argc)
        {
            dlaCore = std::stoi(argv[++i]);
        }
        else
        {
            labelsPath = arg;
        }
    }

    try
    {
        Logger logger;
        std::vector<char> const blob = bundle::readFile(enginePath);
        std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
        if (!runtime)
        {
            throw std::runtime_error("createInferRuntime failed");
        }
        if (dlaCore >= 0)
        {
            runtime->setDLACore(dlaCore); // an engine built with --dla N runs on that DLA core
        }
        std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(blob.data(), blob.size())};
        if (!engine)
        {
            throw std::runtime_error("cannot deserialize " + enginePath
                + " (built for another GPU or TensorRT version? rebuild it here with ./build_engine.sh)");
        }
        std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
        if (!context)
        {
            throw std::runtime_error("createExecutionContext failed");
        }

        std::string inputName;
        std::string outputName;
        for (int32_t i = 0; i < engine->getNbIOTensors(); ++i)
        {
            char const* name = engine->getIOTensorName(i);
            if (engine->getTensorDataType(name) != nvinfer1::DataType::kFLOAT)
            {
                throw std::runtime_error(std::string("tensor ") + name + " is not float32");
            }
            if (engine->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT)
            {
                inputName = name;
            }
            else if (outputName.empty())
            {
                outputName = name;
            }
        }
        if (inputName.empty() || outputName.empty())
        {
            throw std::runtime_error("the engine needs one input and one output");
        }

        // One image: batch 1 (the profile's minimum must be 1) and the sample shape of the profile.
        nvinfer1::Dims const maxShape
            = engine->getProfileShape(inputName.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
        nvinfer1::Dims const minShape
            = engine->getProfileShape(inputName.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
        if (maxShape.nbDims != 4 || minShape.d[0] > 1)
        {
            throw std::runtime_error("expected an NCHW input whose profile accepts batch 1");
        }
        int const c = static_cast<int>(maxShape.d[1]);
        int const h = static_cast<int>(maxShape.d[2]);
        int const w = static_cast<int>(maxShape.d[3]);
        if (!context->setInputShape(inputName.c_str(), nvinfer1::Dims4{1, c, h, w}))
        {
            throw std::runtime_error("setInputShape rejected 1x" + std::to_string(c) + "x" + std::to_string(h) + "x"
                + std::to_string(w));
        }
        std::vector<float> const input = bundle::loadInput(inputPath, c, h, w);
        nvinfer1::Dims const outShape = context->getTensorShape(outputName.c_str());
        std::vector<float> logits(volume(outShape));

        void* dIn = nullptr;
        void* dOut = nullptr;
        cudaStream_t stream = nullptr;
        check(cudaMalloc(&dIn, input.size() * sizeof(float)), "cudaMalloc(input)");
        check(cudaMalloc(&dOut, logits.size() * sizeof(float)), "cudaMalloc(output)");
        check(cudaStreamCreate(&stream), "cudaStreamCreate");
        context->setTensorAddress(inputName.c_str(), dIn);
        context->setTensorAddress(outputName.c_str(), dOut);
        check(cudaMemcpyAsync(dIn, input.data(), input.size() * sizeof(float), cudaMemcpyHostToDevice, stream),
            "cudaMemcpyAsync(H2D)");
        if (!context->enqueueV3(stream))
        {
            throw std::runtime_error("enqueueV3 failed");
        }
        check(cudaMemcpyAsync(logits.data(), dOut, logits.size() * sizeof(float), cudaMemcpyDeviceToHost, stream),
            "cudaMemcpyAsync(D2H)");
        check(cudaStreamSynchronize(stream), "cudaStreamSynchronize");
        cudaStreamDestroy(stream);
        cudaFree(dIn);
        cudaFree(dOut);

        // softmax + top-5 (the same numbers infer.py prints)
        float const peak = *std::max_element(logits.begin(), logits.end());
        std::vector<double> prob(logits.size());
        double sum = 0.0;
        for (size_t i = 0; i < logits.size(); ++i)
        {
            prob[i] = std::exp(static_cast<double>(logits[i]) - peak);
            sum += prob[i];
        }
        std::vector<size_t> order(prob.size());
        std::iota(order.begin(), order.end(), 0);
        size_t const k = std::min<size_t>(5, order.size());
        std::partial_sort(order.begin(), order.begin() + k, order.end(),
            [&](size_t a, size_t b) { return prob[a] > prob[b] || (prob[a] == prob[b] && a < b); });
        std::vector<std::string> const labels = bundle::readLabels(labelsPath);
        std::cout << inputPath << "\n";
        for (size_t r = 0; r < k; ++r)
        {
            size_t const idx = order[r];
            std::string const label = idx < labels.size() ? labels[idx] : "class " + std::to_string(idx);
            std::printf("  %zu. %-40s %.4f\n", r + 1, label.c_str(), prob[idx] / sum);
        }
    }
    catch (std::exception const& e)
    {
        std::cerr << "error: " << e.what() << "\n";
        return 1;
    }
    return 0;
}
