// colt5: one include for the whole engine.
#pragma once
#include "engine/allocator.h"
#include "engine/autograd.h"
#include "engine/device.h"
#include "engine/dtype.h"
#include "engine/generator.h"
#include "engine/parallel.h"
#include "engine/tensor.h"
#include "ops/elementwise.h"
#include "ops/reduce.h"
#include "engine/info.h"
