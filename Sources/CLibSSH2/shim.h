#ifndef POSTGATE_CLIBSSH2_SHIM_H
#define POSTGATE_CLIBSSH2_SHIM_H
#include <libssh2.h>
#endif
