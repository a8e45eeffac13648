/* Per-thread process state (runtime.h). */
#include "runtime/runtime.h"

_Thread_local int runtime_worker_index = -1;
