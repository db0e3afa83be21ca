//! Windows. Filled in by the Windows port (elevation, named pipe, detached process).
