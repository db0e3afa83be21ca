/* Sets corridor's stop event of a process, as `vpn down` stops a daemon gracefully
 * (`signal_stop(pid, Stop::Gracefully)` and `stop_event_name` in src/platform/windows.rs): the
 * Wine test of the DNS service stops the service this way. Usage: stop-event.exe PID */
#include <stdio.h>
#include <stdlib.h>
#include <windows.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: stop-event PID\n");
        return 2;
    }
    wchar_t name[64];
    _snwprintf(name, 64, L"Local\\corridor-stop-%lu", strtoul(argv[1], NULL, 10));
    HANDLE event = OpenEventW(EVENT_MODIFY_STATE, FALSE, name);
    if (event == NULL) {
        fprintf(stderr, "OpenEventW(%ls): error %lu\n", name, GetLastError());
        return 1;
    }
    if (!SetEvent(event)) {
        fprintf(stderr, "SetEvent: error %lu\n", GetLastError());
        return 1;
    }
    CloseHandle(event);
    return 0;
}
