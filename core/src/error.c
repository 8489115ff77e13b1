/*
 * Error text, version and sizes: the functions any thread may call.
 */

#include "nbffi_int.h"


const char *
nbffi_strerror(int err)
{
    switch (err) {
#define NBFFI__STRERROR(name, val, msg)  case NBFFI_##name: return msg;
    NBFFI_ERRNO_MAP(NBFFI__STRERROR)
#undef NBFFI__STRERROR
    case 0:
        return "success";
    default:
        return "unknown error";
    }
}


const char *
nbffi_err_name(int err)
{
    switch (err) {
#define NBFFI__ERR_NAME(name, val, msg)  case NBFFI_##name: return #name;
    NBFFI_ERRNO_MAP(NBFFI__ERR_NAME)
#undef NBFFI__ERR_NAME
    case 0:
        return "OK";
    default:
        return "UNKNOWN";
    }
}


unsigned
nbffi_version(void)
{
    return (NBFFI_VERSION_MAJOR << 16) | (NBFFI_VERSION_MINOR << 8)
           | NBFFI_VERSION_PATCH;
}


unsigned
nbffi_abi_version(void)
{
    return NBFFI_ABI_VERSION;
}


size_t
nbffi_host_size(void)
{
    return sizeof(nbffi_host_t);
}


size_t
nbffi_task_size(void)
{
    return sizeof(nbffi_task_t);
}


void
nbffi__fatal(const char *what, const char *file, int line)
{
    fprintf(stderr, "nbffi: fatal: %s at %s:%d\n", what, file, line);
    abort();
}
