#ifndef CGSEAI_RUNTIME_H
#define CGSEAI_RUNTIME_H

#include <stddef.h>

/// Has the current task's allocator make room for `bytes` of frames at once, then gives them back (the room stays
/// with the task): `TaskMemory.reserve(_:)` in GSEAIGateway, which calls it only inside a task.
void gseai_task_reserve(size_t bytes);

#endif
