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
 *   CompactCore
 *       stream/core/compact.py's CompactTree state (size, subtree roots in one array) with
 *       its hot methods: size, append_leaf_hash(leaf_hash) (anything but exact 32-byte
 *       bytes is judged by compact.py's _require_hash, as in Python), root(), to_hashes(), and
 *       _load(size, hashes) for from_hashes(), which checks them. The Python class
 *       derives from it; sequencer_offer appends to its two trees without a Python call.
 *   tile_roots(packed, width) -> bytes | None
 *       stream/core/tiles.py's group_roots over 32-byte hashes joined in packed: the root
 *       of each group of width (a power of two, 2 .. 65536) consecutive hashes, node
 *       hashes paired level by level, the roots joined; None unless packed is exact bytes
 *       holding a whole number of groups and width such an exact int.
 *   id_key(tenant_id, event_id) -> bytes | None
 *       stream/core/id_window.py's key: BLAKE2b with a 16-byte digest (RFC 7693; OpenSSL
 *       3.0 has only the 64-byte one) of UTF-8(tenant_id || "\0" || event_id). None unless
 *       both are exact str UTF-8 can encode.
 *   sequencer_offer(sequencer, tenant_id, event_id, leaf, source_offset, source_index)
 *       -> Offer | None
 *       stream/core/sequencer.py's Sequencer.offer for the case of nearly every event: a
 *       known tenant, an id neither remembered nor kept forever (nor to be kept), an
 *       input position after the last. It reads and updates the sequencer's own objects
 *       (the tenant's log, its two compact trees, the id window) exactly as that method
 *       does, with the hashes above, and returns the same Offer; the first event of a
 *       batch opens it through the method's own _opened() (the clock and the deadlines
 *       heap stay Python's: once a batch, not per event). For anything else it
 *       returns None having changed nothing, and the method runs. configure_offer(link,
 *       head, offer, sequenced) hands it the named tuples and outcome it builds, once.
 *
 * Separate from _speedups so that a machine without OpenSSL's headers still builds that
 * one (hatch_build.py); tests/unit/test_hashing.py compares every function with hashlib
 * and with the Python it stands in for.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <limits.h>
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

/* ------------------------------------------------------------------ compact tree */

/* stream/core/compact.py's CompactTree state: the size and the popcount(size) roots of
 * the perfect subtrees covering leaves [0, size), left to right, in one array. The
 * sequencer appends to two of them per event (the tenant's log and its open batch); as
 * Python objects each append made a bytes object per merged root and an int per size. */
typedef struct {
    PyObject_HEAD
    unsigned long long size;
    int count;            /* roots held: popcount(size) */
    int capacity;         /* roots the array has room for */
    unsigned char *roots; /* count * HASH_SIZE bytes */
} Compact;

static PyTypeObject CompactType;

/* A leaf hash is_hash() does not take: compact.py's own _require_hash() judges it, as
 * the Python storage does. It raises InvalidArgumentError, or passes 32 bytes of a bytes
 * subclass, which both storages append. 0: append it; -1: an error is set. */
static int check_leaf(PyObject *leaf) {
    PyObject *compact = PyImport_ImportModule("authtrail.stream.core.compact");
    PyObject *checked =
        compact ? PyObject_CallMethod(compact, "_require_hash", "Os", leaf, "leaf hash") : NULL;
    Py_XDECREF(compact);
    if (checked == NULL) return -1;
    Py_DECREF(checked);
    return 0;
}

/* Room for count roots; -1 with MemoryError. */
static int compact_reserve(Compact *self, int count) {
    if (count <= self->capacity) return 0;
    int capacity = self->capacity ? self->capacity : 2;
    while (capacity < count) capacity *= 2;
    unsigned char *grown = PyMem_Realloc(self->roots, (size_t)capacity * HASH_SIZE);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->roots = grown, self->capacity = capacity;
    return 0;
}

/* Whether one more leaf can be appended without an error (0), or not (-1, set). Called
 * before any state changes, so that compact_append() then only hashes. */
static int compact_ready(Compact *self) {
    if (self->size == ULLONG_MAX) {
        PyErr_SetString(PyExc_OverflowError, "a compact tree holds at most 2^64-1 leaves");
        return -1;
    }
    return compact_reserve(self, self->count + 1);
}

/* Append a 32-byte leaf hash (after compact_ready()): each trailing 1 bit of size is a
 * perfect subtree of the height being carried up, merged into it like a binary
 * increment. On a hashing error nothing changed. */
static int compact_append(Compact *self, const unsigned char *leaf) {
    unsigned char carried[HASH_SIZE];
    memcpy(carried, leaf, HASH_SIZE);
    int count = self->count;
    for (unsigned long long rest = self->size; rest & 1; rest >>= 1) {
        count--;
        if (node_digest(self->roots + (size_t)count * HASH_SIZE, carried, carried) < 0) return -1;
    }
    memcpy(self->roots + (size_t)count * HASH_SIZE, carried, HASH_SIZE);
    self->count = count + 1;
    self->size++;
    return 0;
}

static PyObject *compact_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "CompactTree() takes no arguments");
        return NULL;
    }
    return type->tp_alloc(type, 0); /* zeroed: the empty tree */
}

static void compact_dealloc(Compact *self) {
    PyMem_Free(self->roots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *compact_size(Compact *self, void *closure) {
    return PyLong_FromUnsignedLongLong(self->size);
}

static PyObject *compact_append_leaf_hash(Compact *self, PyObject *leaf) {
    if (!is_hash(leaf) && check_leaf(leaf) < 0) return NULL;
    if (compact_ready(self) < 0 ||
        compact_append(self, (const unsigned char *)PyBytes_AS_STRING(leaf)) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *compact_root(Compact *self, PyObject *unused) {
    unsigned char root[HASH_SIZE];
    if (self->count == 0) {
        Part nothing[] = {{"", 0}};
        if (digest(nothing, 1, root) < 0) return NULL; /* RFC 6962: SHA-256 of nothing */
    } else {
        /* Folding from the right reproduces RFC 6962's split at the largest power of two:
         * each stored subtree is the left sibling of everything to its right. */
        memcpy(root, self->roots + (size_t)(self->count - 1) * HASH_SIZE, HASH_SIZE);
        for (int i = self->count - 2; i >= 0; i--)
            if (node_digest(self->roots + (size_t)i * HASH_SIZE, root, root) < 0) return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)root, HASH_SIZE);
}

static PyObject *compact_to_hashes(Compact *self, PyObject *unused) {
    PyObject *hashes = PyList_New(self->count);
    for (int i = 0; hashes != NULL && i < self->count; i++) {
        PyObject *hash = PyBytes_FromStringAndSize(
            (const char *)self->roots + (size_t)i * HASH_SIZE, HASH_SIZE);
        if (hash == NULL) Py_CLEAR(hashes);
        else PyList_SET_ITEM(hashes, i, hash);
    }
    return hashes;
}

/* _load(size, hashes): the state from_hashes() checked (popcount(size) 32-byte hashes). */
static PyObject *compact_load(Compact *self, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("_load(size, hashes)", nargs, 2)) return NULL;
    unsigned long long size = PyLong_AsUnsignedLongLong(args[0]);
    if (size == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
    PyObject *hashes = PySequence_Fast(args[1], "_load takes a sequence of hashes");
    if (hashes == NULL) return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(hashes);
    int fits = count == __builtin_popcountll(size);
    for (Py_ssize_t i = 0; fits && i < count; i++)
        fits = is_hash(PySequence_Fast_GET_ITEM(hashes, i));
    if (!fits) {
        Py_DECREF(hashes);
        PyErr_SetString(PyExc_ValueError, "_load takes popcount(size) 32-byte hashes");
        return NULL;
    }
    if (compact_reserve(self, (int)count) < 0) {
        Py_DECREF(hashes);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++)
        memcpy(self->roots + (size_t)i * HASH_SIZE,
               PyBytes_AS_STRING(PySequence_Fast_GET_ITEM(hashes, i)), HASH_SIZE);
    Py_DECREF(hashes);
    self->size = size, self->count = (int)count;
    Py_RETURN_NONE;
}

static PyGetSetDef compact_getset[] = {
    {"size", (getter)compact_size, NULL, PyDoc_STR("Number of leaves appended so far."), NULL},
    {NULL},
};

static PyMethodDef compact_methods[] = {
    {"append_leaf_hash", (PyCFunction)compact_append_leaf_hash, METH_O, NULL},
    {"root", (PyCFunction)compact_root, METH_NOARGS, NULL},
    {"to_hashes", (PyCFunction)compact_to_hashes, METH_NOARGS, NULL},
    {"_load", (PyCFunction)(void (*)(void))compact_load, METH_FASTCALL, NULL},
    {NULL},
};

static PyTypeObject CompactType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._hashing.CompactCore",
    .tp_doc = PyDoc_STR("stream/core/compact.py's CompactTree state and its hot methods in C"),
    .tp_basicsize = sizeof(Compact),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_new = compact_new,
    .tp_dealloc = (destructor)compact_dealloc,
    .tp_methods = compact_methods,
    .tp_getset = compact_getset,
};

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

/* ---- BLAKE2b (RFC 7693), for the id window's 16-byte keys ---------------------------- */

static const uint64_t BLAKE2B_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

static const uint8_t BLAKE2B_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

#define ROTR64(x, n) (((x) >> (n)) | ((x) << (64 - (n))))
#define BLAKE2B_G(a, b, c, d, x, y)       \
    do {                                  \
        v[a] = v[a] + v[b] + (x);         \
        v[d] = ROTR64(v[d] ^ v[a], 32);   \
        v[c] = v[c] + v[d];               \
        v[b] = ROTR64(v[b] ^ v[c], 24);   \
        v[a] = v[a] + v[b] + (y);         \
        v[d] = ROTR64(v[d] ^ v[a], 16);   \
        v[c] = v[c] + v[d];               \
        v[b] = ROTR64(v[b] ^ v[c], 63);   \
    } while (0)

/* One compression of a 128-byte block; counted: bytes hashed so far, this block included. */
static void blake2b_compress(uint64_t h[8], const unsigned char block[128], uint64_t counted,
                             int last) {
    uint64_t v[16], m[16];
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(m, block, sizeof m); /* BLAKE2b's words are little-endian, as this machine's */
#else
    for (int i = 0; i < 16; i++) {
        uint64_t word = 0;
        for (int b = 7; b >= 0; b--) word = (word << 8) | block[8 * i + b];
        m[i] = word;
    }
#endif
    for (int i = 0; i < 8; i++) v[i] = h[i], v[i + 8] = BLAKE2B_IV[i];
    v[12] ^= counted; /* the counter's high word stays 0: inputs here are far below 2^64 */
    if (last) v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = BLAKE2B_SIGMA[r];
        BLAKE2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        BLAKE2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        BLAKE2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        BLAKE2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        BLAKE2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        BLAKE2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        BLAKE2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        BLAKE2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* Unkeyed BLAKE2b of the parts joined, with an out_size-byte digest (1..64). */
static void blake2b(const Part *parts, int count, unsigned char *out, size_t out_size) {
    uint64_t h[8];
    memcpy(h, BLAKE2B_IV, sizeof h);
    h[0] ^= 0x01010000ULL ^ (uint64_t)out_size;
    unsigned char block[128];
    size_t filled = 0;
    uint64_t counted = 0;
    for (int p = 0; p < count; p++) {
        const unsigned char *data = parts[p].data;
        size_t size = parts[p].size;
        while (size > 0) {
            /* A full block is compressed only once more input follows: the last one,
             * full or not, is compressed with the final flag below. */
            if (filled == sizeof block) {
                counted += sizeof block;
                blake2b_compress(h, block, counted, 0);
                filled = 0;
            }
            size_t take = sizeof block - filled < size ? sizeof block - filled : size;
            memcpy(block + filled, data, take);
            filled += take, data += take, size -= take;
        }
    }
    counted += filled;
    memset(block + filled, 0, sizeof block - filled);
    blake2b_compress(h, block, counted, 1);
    for (size_t i = 0; i < out_size; i++) out[i] = (unsigned char)(h[i / 8] >> (8 * (i % 8)));
}

#define ID_KEY_SIZE 16 /* id_window.py's _DIGEST_BYTES */

/* The UTF-8 of an exact str, or NULL: with no error set when it is not one or UTF-8
 * cannot encode it (the caller returns None), with one set on any other failure. */
static const char *utf8_of(PyObject *text, Py_ssize_t *size) {
    if (!PyUnicode_CheckExact(text)) return NULL;
    const char *utf8 = PyUnicode_AsUTF8AndSize(text, size);
    if (utf8 == NULL && PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) PyErr_Clear();
    return utf8;
}

/* The id window's key of event_id of tenant_id into out; 1 done, 0 left to Python, -1 error. */
static int id_key_into(PyObject *tenant, PyObject *event_id, unsigned char out[ID_KEY_SIZE]) {
    Py_ssize_t tenant_size, id_size;
    const char *tenant_utf8 = utf8_of(tenant, &tenant_size);
    if (tenant_utf8 == NULL) return PyErr_Occurred() ? -1 : 0;
    const char *id_utf8 = utf8_of(event_id, &id_size);
    if (id_utf8 == NULL) return PyErr_Occurred() ? -1 : 0;
    Part parts[] = {{tenant_utf8, (size_t)tenant_size}, {"\0", 1}, {id_utf8, (size_t)id_size}};
    blake2b(parts, 3, out, ID_KEY_SIZE);
    return 1;
}

static PyObject *id_key(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("id_key(tenant_id, event_id)", nargs, 2)) return NULL;
    unsigned char key[ID_KEY_SIZE];
    int done = id_key_into(args[0], args[1], key);
    if (done < 0) return NULL;
    if (done == 0) Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)key, ID_KEY_SIZE);
}

/* ---- Sequencer.offer ------------------------------------------------------------------ */

/* Set once by configure_offer(): what the fast path builds. */
static PyObject *link_type, *head_type, *offer_type, *sequenced;

static PyObject *configure_offer(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("configure_offer(link, head, offer, sequenced)", nargs, 4)) return NULL;
    for (int i = 0; i < 3; i++)
        if (!PyType_Check(args[i]) || !PyType_IsSubtype((PyTypeObject *)args[i], &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "configure_offer takes three tuple types");
            return NULL;
        }
    PyObject **slots[] = {&link_type, &head_type, &offer_type, &sequenced};
    for (int i = 0; i < 4; i++) {
        Py_INCREF(args[i]);
        Py_XSETREF(*slots[i], args[i]);
    }
    Py_RETURN_NONE;
}

/* An instance of the tuple subtype type holding count new references (stolen). */
static PyObject *new_tuple(PyObject *type, PyObject **items, Py_ssize_t count) {
    PyObject *tuple = ((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, count);
    if (tuple == NULL) {
        for (Py_ssize_t i = 0; i < count; i++) Py_DECREF(items[i]);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) PyTuple_SET_ITEM(tuple, i, items[i]);
    return tuple;
}

/* Interned attribute names, made at import. */
static PyObject *name_source_offset, *name_source_index, *name_tenants, *name_kept_ids,
    *name_recent_ids, *name_remember_forever, *name_batch_size, *name_full, *name_batch,
    *name_tree, *name_head, *name_newer, *name_older,
    *name_generation, *name_opened;

/* getattr(owner, name) if it is of the wanted kind (0: anything), else NULL without an
 * error (the caller leaves the event to Python); NULL with one on a real failure. */
enum kind { ANY, EXACT_INT, EXACT_DICT, EXACT_LIST, COMPACT };

static PyObject *attribute(PyObject *owner, PyObject *name, enum kind kind) {
    PyObject *value = PyObject_GetAttr(owner, name);
    if (value == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) PyErr_Clear();
        return NULL;
    }
    int fits = kind == ANY || (kind == EXACT_INT && PyLong_CheckExact(value)) ||
               (kind == EXACT_DICT && PyDict_CheckExact(value)) ||
               (kind == EXACT_LIST && PyList_CheckExact(value)) ||
               (kind == COMPACT && PyObject_TypeCheck(value, &CompactType));
    if (!fits) Py_CLEAR(value);
    return value;
}

/* An exact int as a long long; 0 if it does not fit (left to Python), -1 on error. */
static int as_long_long(PyObject *value, long long *out) {
    int overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return overflow == 0;
}

#define WHOLE_MESSAGE (1LL << 62) /* sequencer.py's _WHOLE_MESSAGE: a bare message's index */

static PyObject *sequencer_offer(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (wrong_arguments("sequencer_offer(sequencer, tenant_id, event_id, leaf, source_offset, "
                        "source_index)", nargs, 6))
        return NULL;
    PyObject *self = args[0], *tenant = args[1], *event_id = args[2], *leaf = args[3];
    PyObject *offset_object = args[4], *index_object = args[5];
    if (link_type == NULL || !PyUnicode_CheckExact(tenant) || !PyUnicode_CheckExact(event_id) ||
        !PyBytes_CheckExact(leaf) || !PyLong_CheckExact(offset_object) ||
        !(index_object == Py_None || PyLong_CheckExact(index_object)))
        Py_RETURN_NONE;
    PyObject *result = NULL, *leaf_hash = NULL, *chained = NULL, *key = NULL, *content = NULL;
    PyObject *current = NULL, *current_index = NULL, *tenants = NULL, *kept = NULL;
    PyObject *window = NULL, *newer = NULL, *older = NULL, *generation = NULL;
    PyObject *remember = NULL, *batch = NULL, *tree = NULL, *head = NULL;
    PyObject *limit = NULL, *full = NULL, *next_seq = NULL, *log = NULL;
    long long offset, index = WHOLE_MESSAGE, at, at_index = WHOLE_MESSAGE;
    int fits;
#define LEAVE_IF(condition) \
    do {                    \
        if (condition) {    \
            if (PyErr_Occurred()) goto done; \
            goto to_python; \
        }                   \
    } while (0)
    LEAVE_IF((fits = as_long_long(offset_object, &offset)) != 1);
    if (index_object != Py_None) LEAVE_IF((fits = as_long_long(index_object, &index)) != 1);
    /* handled(): a position at or before the last one is a replay (Python says so). */
    LEAVE_IF((current = attribute(self, name_source_offset, EXACT_INT)) == NULL);
    LEAVE_IF((fits = as_long_long(current, &at)) != 1);
    LEAVE_IF((current_index = attribute(self, name_source_index, ANY)) == NULL);
    if (current_index != Py_None) {
        LEAVE_IF(!PyLong_CheckExact(current_index));
        LEAVE_IF((fits = as_long_long(current_index, &at_index)) != 1);
    }
    LEAVE_IF(offset < at || (offset == at && index <= at_index));
    LEAVE_IF((tenants = attribute(self, name_tenants, EXACT_DICT)) == NULL);
    log = PyDict_GetItemWithError(tenants, tenant); /* borrowed until the INCREF */
    LEAVE_IF(log == NULL);
    Py_INCREF(log);
    /* An id kept forever (a decision's) is told from that dict, not the window. */
    LEAVE_IF((kept = attribute(log, name_kept_ids, EXACT_DICT)) == NULL);
    LEAVE_IF(PyDict_GET_SIZE(kept) && (PyDict_GetItemWithError(kept, event_id) != NULL ||
                                       PyErr_Occurred()));
    LEAVE_IF((window = attribute(self, name_recent_ids, ANY)) == NULL || window == Py_None);
    LEAVE_IF((newer = attribute(window, name_newer, EXACT_DICT)) == NULL);
    LEAVE_IF((older = attribute(window, name_older, EXACT_DICT)) == NULL);
    LEAVE_IF((generation = attribute(window, name_generation, EXACT_INT)) == NULL);
    long long generation_size;
    LEAVE_IF((fits = as_long_long(generation, &generation_size)) != 1);
    LEAVE_IF((remember = attribute(self, name_remember_forever, ANY)) == NULL);
    if (remember != Py_None) {
        LEAVE_IF(!PyUnicode_CheckExact(remember));
        if (PyUnicode_GET_LENGTH(remember) > 0) {
            Py_ssize_t starts = PyUnicode_Tailmatch(event_id, remember, 0, PY_SSIZE_T_MAX, -1);
            LEAVE_IF(starts != 0); /* kept forever (1), or an error (-1) */
        }
    }
    /* The log's and the batch's compact trees, in C (any other kind is left to Python). */
    LEAVE_IF((batch = attribute(log, name_batch, COMPACT)) == NULL);
    LEAVE_IF((tree = attribute(log, name_tree, COMPACT)) == NULL);
    Compact *batch_tree = (Compact *)batch, *log_tree = (Compact *)tree;
    unsigned long long batch_leaves = batch_tree->size;
    LEAVE_IF(batch_tree == log_tree || batch_leaves == ULLONG_MAX || log_tree->size == ULLONG_MAX);
    if (compact_ready(log_tree) < 0 || compact_ready(batch_tree) < 0) goto done;
    long long batch_limit;
    LEAVE_IF((limit = attribute(self, name_batch_size, EXACT_INT)) == NULL);
    LEAVE_IF((fits = as_long_long(limit, &batch_limit)) != 1);
    LEAVE_IF((full = attribute(self, name_full, EXACT_LIST)) == NULL);
    LEAVE_IF((head = attribute(log, name_head, ANY)) == NULL);
    LEAVE_IF(!PyTuple_Check(head) || PyTuple_GET_SIZE(head) != 3);
    PyObject *head_seq = PyTuple_GET_ITEM(head, 1), *prev_hash = PyTuple_GET_ITEM(head, 2);
    LEAVE_IF(!PyLong_CheckExact(head_seq) || !is_hash(prev_hash));
    unsigned long long last_seq = PyLong_AsUnsignedLongLong(head_seq);
    if (last_seq == (unsigned long long)-1 && PyErr_Occurred()) {
        if (!PyErr_ExceptionMatches(PyExc_OverflowError)) goto done;
        PyErr_Clear(); /* negative or beyond 64 bits */
        goto to_python;
    }
    LEAVE_IF(last_seq == ULLONG_MAX);
    next_seq = PyLong_FromUnsignedLongLong(last_seq + 1);
    if (next_seq == NULL) goto done;
    /* The leaf hash, then whether the id is remembered: a duplicate or a conflict. */
    Part leaf_parts[] = {{"\x00", 1}, {PyBytes_AS_STRING(leaf), (size_t)PyBytes_GET_SIZE(leaf)}};
    leaf_hash = digest_bytes(leaf_parts, 2);
    if (leaf_hash == NULL) goto done;
    unsigned char key_bytes[ID_KEY_SIZE];
    int keyed = id_key_into(tenant, event_id, key_bytes);
    if (keyed < 0) goto done;
    LEAVE_IF(keyed == 0);
    key = PyBytes_FromStringAndSize((const char *)key_bytes, ID_KEY_SIZE);
    if (key == NULL) goto done;
    /* Remembered, with this content or another: a duplicate or a conflict. */
    PyObject *known = PyDict_GetItemWithError(newer, key);
    if (known == NULL && !PyErr_Occurred()) known = PyDict_GetItemWithError(older, key);
    LEAVE_IF(known != NULL || PyErr_Occurred());
    PyObject *chain_args[] = {tenant, next_seq, prev_hash, leaf_hash};
    chained = chain_hash(NULL, chain_args, 4);
    if (chained == NULL) goto done;
    LEAVE_IF(chained == Py_None); /* a seq beyond 64 bits or a tenant too long */
    content = PyBytes_FromStringAndSize(PyBytes_AS_STRING(leaf_hash), ID_KEY_SIZE);
    if (content == NULL) goto done;
    /* Sequenced: from here on the state changes, as the method's own code changes it. */
    if (PyObject_SetAttr(self, name_source_offset, offset_object) < 0 ||
        PyObject_SetAttr(self, name_source_index, index_object) < 0)
        goto done;
    if (batch_leaves == 0) { /* the tenant's first event since its last checkpoint */
        PyObject *opened = PyObject_CallMethodOneArg(self, name_opened, log);
        if (opened == NULL) goto done;
        Py_DECREF(opened);
    }
    Py_INCREF(next_seq), Py_INCREF(prev_hash), Py_INCREF(leaf_hash), Py_INCREF(chained);
    PyObject *link_items[] = {next_seq, prev_hash, leaf_hash, chained};
    PyObject *link = new_tuple(link_type, link_items, 4);
    if (link == NULL) goto done;
    Py_INCREF(tenant), Py_INCREF(next_seq), Py_INCREF(chained);
    PyObject *head_items[] = {tenant, next_seq, chained};
    PyObject *new_head = new_tuple(head_type, head_items, 3);
    if (new_head == NULL || PyObject_SetAttr(log, name_head, new_head) < 0) {
        Py_XDECREF(new_head);
        Py_DECREF(link);
        goto done;
    }
    Py_DECREF(new_head);
    const unsigned char *leaf_bytes = (const unsigned char *)PyBytes_AS_STRING(leaf_hash);
    if (compact_append(log_tree, leaf_bytes) < 0 || compact_append(batch_tree, leaf_bytes) < 0 ||
        (batch_limit > 0 && batch_leaves + 1 == (unsigned long long)batch_limit &&
         PyList_Append(full, tenant) < 0)) {
        Py_DECREF(link);
        goto done;
    }
    if (PyDict_GET_SIZE(newer) >= generation_size) { /* IdWindow.add_at: a new generation */
        PyObject *fresh = PyDict_New();
        if (fresh == NULL || PyObject_SetAttr(window, name_older, newer) < 0 ||
            PyObject_SetAttr(window, name_newer, fresh) < 0) {
            Py_XDECREF(fresh);
            Py_DECREF(link);
            goto done;
        }
        Py_SETREF(newer, fresh);
    }
    if (PyDict_SetItem(newer, key, content) < 0) {
        Py_DECREF(link);
        goto done;
    }
    Py_INCREF(sequenced);
    PyObject *offer_items[] = {sequenced, link};
    result = new_tuple(offer_type, offer_items, 2);
    goto done;
to_python:
    result = Py_None;
    Py_INCREF(result);
done:
#undef LEAVE_IF
    Py_XDECREF(log);
    Py_XDECREF(leaf_hash), Py_XDECREF(chained), Py_XDECREF(key), Py_XDECREF(content);
    Py_XDECREF(current), Py_XDECREF(current_index), Py_XDECREF(tenants), Py_XDECREF(kept);
    Py_XDECREF(window), Py_XDECREF(newer), Py_XDECREF(older), Py_XDECREF(generation);
    Py_XDECREF(remember), Py_XDECREF(batch), Py_XDECREF(tree), Py_XDECREF(head);
    Py_XDECREF(limit), Py_XDECREF(full), Py_XDECREF(next_seq);
    return result;
}

static PyMethodDef methods[] = {
    {"leaf_hash", (PyCFunction)(void (*)(void))leaf_hash, METH_FASTCALL,
     PyDoc_STR("leaf_hash(data) -> bytes | None: SHA-256(0x00 || data)")},
    {"node_hash", (PyCFunction)(void (*)(void))node_hash, METH_FASTCALL,
     PyDoc_STR("node_hash(left, right) -> bytes | None: SHA-256(0x01 || left || right)")},
    {"chain_hash", (PyCFunction)(void (*)(void))chain_hash, METH_FASTCALL,
     PyDoc_STR("chain_hash(tenant_id, seq, prev_hash, leaf_hash) -> bytes | None")},
    {"tile_roots", (PyCFunction)(void (*)(void))tile_roots, METH_FASTCALL,
     PyDoc_STR("tile_roots(packed, width) -> bytes | None: each group's perfect-tree root")},
    {"id_key", (PyCFunction)(void (*)(void))id_key, METH_FASTCALL,
     PyDoc_STR("id_key(tenant_id, event_id) -> bytes | None: the id window's BLAKE2b key")},
    {"configure_offer", (PyCFunction)(void (*)(void))configure_offer, METH_FASTCALL,
     PyDoc_STR("configure_offer(link, head, offer, sequenced): what sequencer_offer builds")},
    {"sequencer_offer", (PyCFunction)(void (*)(void))sequencer_offer, METH_FASTCALL,
     PyDoc_STR("sequencer_offer(sequencer, tenant_id, event_id, leaf, source_offset, "
               "source_index) -> Offer | None: Sequencer.offer's usual case")},
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
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&name_source_offset, "source_offset"}, {&name_source_index, "source_index"},
        {&name_tenants, "tenants"}, {&name_kept_ids, "kept_ids"},
        {&name_recent_ids, "_recent_ids"}, {&name_remember_forever, "_remember_forever"},
        {&name_batch_size, "_batch_size"}, {&name_full, "_full"}, {&name_batch, "batch"},
        {&name_tree, "tree"}, {&name_head, "head"}, {&name_newer, "_newer"},
        {&name_older, "_older"},
        {&name_generation, "_generation"}, {&name_opened, "_opened"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if ((*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL) return NULL;
    if (PyType_Ready(&CompactType) < 0) return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module != NULL && PyModule_AddObjectRef(module, "CompactCore", (PyObject *)&CompactType) < 0)
        Py_CLEAR(module);
    return module;
}
