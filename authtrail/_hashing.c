/* authtrail._hashing: the sequencer's per-event SHA-256 in C, through OpenSSL's libcrypto.
 *
 * Each event sequenced costs four SHA-256 of under 150 bytes: its RFC 6962 leaf hash, its
 * chain hash and (on average) one node hash in each of the tenant's two compact trees.
 * hashlib spends ~0.33 µs a call on objects around a ~0.1 µs digest, and the Python that
 * joins the inputs as much again (docs/PERFORMANCE.md). These functions hash the same bytes
 * with the same library, so their results are identical by construction; they exist only
 * to skip that overhead. Like authtrail/_speedups.c they hand anything unusual back to the
 * Python code they stand in for (they return None), which owns every check and error:
 *
 *   leaf_hash(data) -> bytes | None            SHA-256(0x00 || data), data exact bytes
 *   node_hash(left, right) -> bytes | None     SHA-256(0x01 || left || right), exact bytes
 *   chain_hash(tenant_id, seq, prev_hash, leaf_hash) -> bytes | None
 *       stream/core/chain.py: SHA-256(CHAIN_DOMAIN || u32(len(tenant)) || tenant || u64(seq)
 *       || prev_hash || leaf_hash); None unless tenant_id is an exact str UTF-8 can encode,
 *       seq an exact int in 1 .. 2^64-1 and both hashes exact 32-byte bytes.
 *   compact_push(hashes, size, leaf_hash) -> True | None
 *       stream/core/compact.py's append: merge the list's trailing subtree roots with the
 *       32-byte leaf hash as a binary increment of size, then append the result. None,
 *       changing nothing, unless hashes is an exact list holding at least the merged roots
 *       (exact 32-byte bytes each) and size an exact non-negative int.
 *   tile_roots(packed, width) -> bytes | None
 *       stream/core/tiles.py's group_roots over 32-byte hashes joined in packed: the root
 *       of each group of width (a power of two, 2 .. 65536) consecutive hashes, node
 *       hashes paired level by level, the roots joined; None unless packed is exact bytes
 *       holding a whole number of groups and width such an exact int.
 *
 * Separate from _speedups so that a machine without OpenSSL's headers still builds that
 * one (hatch_build.py); tests/unit/test_hashing.py compares every function with hashlib.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>

#define HASH_SIZE 32
#define MAX_TILE_WIDTH 65536 /* 2 MiB of hashes a group at most */

static const char CHAIN_DOMAIN[] = "authtrail-chain-v1\n"; /* chain.py's CHAIN_DOMAIN */

/* One context, reused: every call holds the GIL and none releases it, so no two digests
 * run at once. OpenSSL 3 fetches the implementation once here instead of on each init
 * (an implicit fetch per digest costs ~0.2 µs, as much as the digest). */
static EVP_MD_CTX *context;
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
static EVP_MD *sha256;
#define DIGEST_INIT(ctx) EVP_DigestInit_ex2((ctx), sha256, NULL)
#else
static const EVP_MD *sha256;
#define DIGEST_INIT(ctx) EVP_DigestInit_ex((ctx), sha256, NULL)
#endif

typedef struct {
    const void *data;
    size_t size;
} Part;

/* SHA-256 of the parts joined, into out; -1 with a Python error set if OpenSSL fails. */
static int digest(const Part *parts, int count, unsigned char out[HASH_SIZE]) {
    unsigned int length = 0;
    int ok = DIGEST_INIT(context);
    for (int i = 0; ok && i < count; i++) ok = EVP_DigestUpdate(context, parts[i].data, parts[i].size);
    if (ok) ok = EVP_DigestFinal_ex(context, out, &length);
    if (!ok || length != HASH_SIZE) {
        PyErr_SetString(PyExc_RuntimeError, "OpenSSL's SHA-256 failed");
        return -1;
    }
    return 0;
}

/* RFC 6962's node hash of two 32-byte hashes, into out (which may be either input). */
static int node_digest(const unsigned char *left, const unsigned char *right,
                       unsigned char out[HASH_SIZE]) {
    Part parts[] = {{"\x01", 1}, {left, HASH_SIZE}, {right, HASH_SIZE}};
    return digest(parts, 3, out);
}

static PyObject *digest_bytes(const Part *parts, int count) {
    unsigned char out[HASH_SIZE];
    if (digest(parts, count, out) < 0) return NULL;
    return PyBytes_FromStringAndSize((const char *)out, HASH_SIZE);
}

static int is_hash(PyObject *value) {
    return PyBytes_CheckExact(value) && PyBytes_GET_SIZE(value) == HASH_SIZE;
}

static int wrong_arguments(const char *signature, Py_ssize_t nargs, Py_ssize_t expected) {
    if (nargs == expected) return 0;
    PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", signature, expected);
    return 1;
}

static PyObject *leaf_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("leaf_hash(data)", nargs, 1)) return NULL;
    if (!PyBytes_CheckExact(args[0])) Py_RETURN_NONE;
    Part parts[] = {{"\x00", 1}, {PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0])}};
    return digest_bytes(parts, 2);
}

static PyObject *node_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("node_hash(left, right)", nargs, 2)) return NULL;
    if (!PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) Py_RETURN_NONE;
    Part parts[] = {
        {"\x01", 1},
        {PyBytes_AS_STRING(args[0]), (size_t)PyBytes_GET_SIZE(args[0])},
        {PyBytes_AS_STRING(args[1]), (size_t)PyBytes_GET_SIZE(args[1])},
    };
    return digest_bytes(parts, 3);
}

static void put_big_endian(unsigned char *out, uint64_t value, int size) {
    for (int i = size - 1; i >= 0; i--, value >>= 8) out[i] = (unsigned char)value;
}

static PyObject *chain_hash(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("chain_hash(tenant_id, seq, prev_hash, leaf_hash)", nargs, 4)) return NULL;
    PyObject *tenant = args[0], *seq = args[1], *prev = args[2], *leaf = args[3];
    if (!PyUnicode_CheckExact(tenant) || !PyLong_CheckExact(seq) || !is_hash(prev) ||
        !is_hash(leaf))
        Py_RETURN_NONE;
    Py_ssize_t tenant_size;
    const char *tenant_utf8 = PyUnicode_AsUTF8AndSize(tenant, &tenant_size);
    if (tenant_utf8 == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return NULL;
        PyErr_Clear(); /* a lone surrogate: the Python path raises its own error */
        Py_RETURN_NONE;
    }
    unsigned long long number = PyLong_AsUnsignedLongLong(seq);
    if (number == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear(); /* negative or beyond 64 bits */
        Py_RETURN_NONE;
    }
    if (number == 0 || (uint64_t)tenant_size > UINT32_MAX) Py_RETURN_NONE;
    unsigned char length[4], position[8];
    put_big_endian(length, (uint64_t)tenant_size, 4);
    put_big_endian(position, number, 8);
    Part parts[] = {
        {CHAIN_DOMAIN, sizeof CHAIN_DOMAIN - 1},
        {length, 4},
        {tenant_utf8, (size_t)tenant_size},
        {position, 8},
        {PyBytes_AS_STRING(prev), HASH_SIZE},
        {PyBytes_AS_STRING(leaf), HASH_SIZE},
    };
    return digest_bytes(parts, 6);
}

static PyObject *compact_push(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("compact_push(hashes, size, leaf_hash)", nargs, 3)) return NULL;
    PyObject *hashes = args[0], *size_object = args[1], *leaf = args[2];
    if (!PyList_CheckExact(hashes) || !PyLong_CheckExact(size_object) || !is_hash(leaf))
        Py_RETURN_NONE;
    unsigned long long size = PyLong_AsUnsignedLongLong(size_object);
    if (size == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    /* Each trailing 1 bit of size is a stored subtree as high as the one carried up. */
    Py_ssize_t merges = 0;
    for (unsigned long long rest = size; rest & 1; rest >>= 1) merges++;
    Py_ssize_t count = PyList_GET_SIZE(hashes);
    if (merges > count) Py_RETURN_NONE;
    for (Py_ssize_t i = count - merges; i < count; i++)
        if (!is_hash(PyList_GET_ITEM(hashes, i))) Py_RETURN_NONE;
    unsigned char carried[HASH_SIZE];
    memcpy(carried, PyBytes_AS_STRING(leaf), HASH_SIZE);
    for (Py_ssize_t i = count - 1; i >= count - merges; i--) {
        PyObject *stored = PyList_GET_ITEM(hashes, i);
        if (node_digest((const unsigned char *)PyBytes_AS_STRING(stored), carried, carried) < 0)
            return NULL;
    }
    if (merges == 0) {
        if (PyList_Append(hashes, leaf) < 0) return NULL;
        Py_RETURN_TRUE;
    }
    PyObject *merged = PyBytes_FromStringAndSize((const char *)carried, HASH_SIZE);
    if (merged == NULL) return NULL;
    /* The merged root takes the place of the first root it covers, the others go (an
     * error in deleting them leaves the tree as it was). */
    Py_ssize_t first = count - merges;
    if (merges > 1 && PyList_SetSlice(hashes, first + 1, count, NULL) < 0) {
        Py_DECREF(merged);
        return NULL;
    }
    PyObject *replaced = PyList_GET_ITEM(hashes, first);
    PyList_SET_ITEM(hashes, first, merged);
    Py_DECREF(replaced);
    Py_RETURN_TRUE;
}

static PyObject *tile_roots(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("tile_roots(packed, width)", nargs, 2)) return NULL;
    PyObject *packed = args[0], *width_object = args[1];
    if (!PyBytes_CheckExact(packed) || !PyLong_CheckExact(width_object)) Py_RETURN_NONE;
    long width = PyLong_AsLong(width_object);
    if (width == -1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    if (width < 2 || width > MAX_TILE_WIDTH || (width & (width - 1)) != 0) Py_RETURN_NONE;
    Py_ssize_t size = PyBytes_GET_SIZE(packed), group = (Py_ssize_t)width * HASH_SIZE;
    if (size % group != 0) Py_RETURN_NONE;
    Py_ssize_t groups = size / group;
    PyObject *result = PyBytes_FromStringAndSize(NULL, groups * HASH_SIZE);
    if (result == NULL) return NULL;
    unsigned char *level = PyMem_Malloc((size_t)group);
    if (level == NULL) {
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    const unsigned char *in = (const unsigned char *)PyBytes_AS_STRING(packed);
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(result);
    for (Py_ssize_t g = 0; g < groups; g++) {
        memcpy(level, in + g * group, (size_t)group);
        /* Pair up level by level in place: node i of the next level overwrites a slot
         * whose hash this level has already used (node_digest() reads its inputs first). */
        for (long count = width; count > 1; count /= 2) {
            for (long i = 0; i < count / 2; i++) {
                const unsigned char *left = level + 2 * i * HASH_SIZE;
                if (node_digest(left, left + HASH_SIZE, level + i * HASH_SIZE) < 0) {
                    PyMem_Free(level);
                    Py_DECREF(result);
                    return NULL;
                }
            }
        }
        memcpy(out + g * HASH_SIZE, level, HASH_SIZE);
    }
    PyMem_Free(level);
    return result;
}

static PyMethodDef methods[] = {
    {"leaf_hash", (PyCFunction)(void (*)(void))leaf_hash, METH_FASTCALL,
     PyDoc_STR("leaf_hash(data) -> bytes | None: SHA-256(0x00 || data)")},
    {"node_hash", (PyCFunction)(void (*)(void))node_hash, METH_FASTCALL,
     PyDoc_STR("node_hash(left, right) -> bytes | None: SHA-256(0x01 || left || right)")},
    {"chain_hash", (PyCFunction)(void (*)(void))chain_hash, METH_FASTCALL,
     PyDoc_STR("chain_hash(tenant_id, seq, prev_hash, leaf_hash) -> bytes | None")},
    {"compact_push", (PyCFunction)(void (*)(void))compact_push, METH_FASTCALL,
     PyDoc_STR("compact_push(hashes, size, leaf_hash) -> True | None: a compact tree's append")},
    {"tile_roots", (PyCFunction)(void (*)(void))tile_roots, METH_FASTCALL,
     PyDoc_STR("tile_roots(packed, width) -> bytes | None: each group's perfect-tree root")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "authtrail._hashing",
    .m_doc = PyDoc_STR("The sequencer's per-event SHA-256 in C, through OpenSSL's libcrypto."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__hashing(void) {
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
#else
    sha256 = EVP_sha256();
#endif
    context = EVP_MD_CTX_new();
    if (sha256 == NULL || context == NULL) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL provides no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module_def);
}
