#include "CGSEAIRuntime.h"

// The Swift runtime's task allocator, declared as the runtime declares it (`SWIFT_CC(swift)`, in
// `swift/Runtime/Concurrency.h`): what compiled asynchronous code calls for each frame. Allocations are last in,
// first out.
__attribute__((swiftcall)) extern void *swift_task_alloc(size_t size);
__attribute__((swiftcall)) extern void swift_task_dealloc(void *pointer);

void gseai_task_reserve(size_t bytes) {
    swift_task_dealloc(swift_task_alloc(bytes));
}
