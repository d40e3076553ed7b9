#ifndef POSTGATE_CLIBPQ_SHIM_H
#define POSTGATE_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
