/* authtrail._native_rows: Avro record bodies to one ClickHouse Native block, in C.
 *
 * The sink stored chained records by handing ClickHouse their Avro bodies joined into an
 * object container (sinks/avro_rows.py). ClickHouse reads such a container at ~4 CPU µs a
 * row and a Native block of the same rows at ~1 (docs/PERFORMANCE.md, "Native blocks").
 * This module rewrites the bodies as the columns of one Native block instead, ~0.5 µs a
 * row, without any Python per row.
 * sinks/native_rows.py builds the plan from the writer schema and falls back to the Avro
 * container when this module is missing or the schema has a type the plan cannot carry.
 *
 *   native_block(ops, headers, body_ops, parts) -> bytes
 *       One Native block (ClickHouse's "Native" format: column and row counts as unsigned
 *       LEB128, then per column its name, its type name and its values) of the rows
 *       body + suffix, for each (bodies, suffix) of the list parts (a Kafka message's
 *       bodies and where it was read) and each body of its list. One block for a whole
 *       insert: ClickHouse spends ~0.5 ms on each block it reads, more than 500 rows
 *       cost. ops is a tuple, one (code, flags, arg) per field of a row in the writer's
 *       order: code OP_STRING (Avro string or bytes), OP_LONG, OP_INT, OP_ENUM (arg: the
 *       tuple of symbols, bytes), OP_FIXED (arg: the size) or OP_MAP (a map of strings);
 *       flags FLAG_KEEP (the field is a column; otherwise it is read and skipped),
 *       FLAG_NULLABLE (a union of null and the type), FLAG_NULL_SECOND (null is the
 *       union's second branch). The first body_ops fields are read from the body, the rest
 *       from the suffix. headers holds, for each kept field in order, its column's name and
 *       type already encoded. Raises ValueError naming the row when a body is not exactly
 *       one row of those fields (a length or index out of range, bytes left over), so
 *       malformed input is never stored as something else.
 *
 * What each kept field becomes, as ClickHouse's own Avro reader makes it: a string its
 * bytes (String), an enum its symbol (String), a long its 8 little-endian bytes (Int64,
 * UInt64 or DateTime64 as the header says), an int its 4 (Int32, UInt32), a fixed its bytes
 * (FixedString), a map its entries in order (Map(String, String)), a union with null a
 * null map byte then the value or the type's default. tests/integration/test_native_rows.py
 * stores the same rows both ways and compares every column.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

enum { OP_STRING = 0, OP_LONG = 1, OP_INT = 2, OP_ENUM = 3, OP_FIXED = 4, OP_MAP = 5 };
enum { FLAG_KEEP = 1, FLAG_NULLABLE = 2, FLAG_NULL_SECOND = 4 };
#define MAX_OPS 256

typedef struct {
    char *data;
    size_t len, cap;
} Buffer;

typedef struct {
    int code, flags;
    Py_ssize_t size;         /* OP_FIXED */
    Py_ssize_t symbol_count; /* OP_ENUM */
    PyObject *symbols;       /* OP_ENUM: borrowed tuple of bytes */
    Buffer values, nulls, keys, offsets;
    uint64_t entries; /* OP_MAP: entries so far, the next offset */
} Column;

typedef struct {
    const unsigned char *at, *end;
} Reader;

static inline int reserve(Buffer *buffer, size_t more) {
    if (buffer->cap - buffer->len >= more)
        return 0;
    size_t cap = buffer->cap ? buffer->cap : 4096;
    while (cap - buffer->len < more) {
        if (cap > SIZE_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        cap *= 2;
    }
    char *data = PyMem_Realloc(buffer->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buffer->data = data;
    buffer->cap = cap;
    return 0;
}

static inline int append(Buffer *buffer, const void *bytes, size_t count) {
    if (reserve(buffer, count) < 0)
        return -1;
    memcpy(buffer->data + buffer->len, bytes, count);
    buffer->len += count;
    return 0;
}

/* Unsigned LEB128, as the Native format writes counts and lengths: at most 10 bytes. */
static char *put_leb128(char *at, uint64_t value) {
    do {
        unsigned char byte = value & 0x7f;
        value >>= 7;
        *at++ = (char)(value ? (byte | 0x80) : byte);
    } while (value);
    return at;
}

static inline int append_leb128(Buffer *buffer, uint64_t value) {
    if (reserve(buffer, 10) < 0)
        return -1;
    buffer->len = (size_t)(put_leb128(buffer->data + buffer->len, value) - buffer->data);
    return 0;
}

static inline int append_string(Buffer *buffer, const unsigned char *bytes, size_t count) {
    if (append_leb128(buffer, count) < 0 || append(buffer, bytes, count) < 0)
        return -1;
    return 0;
}

static void release(Buffer *buffer) {
    PyMem_Free(buffer->data);
    buffer->data = NULL;
    buffer->len = buffer->cap = 0;
}

/* An Avro long: a zig-zag varint of at most 10 bytes. Most are one byte (lengths under 64,
 * union and enum indexes): read inline; the others below. */
static int read_long_slow(Reader *reader, int64_t *value, Py_ssize_t row, const char *what);

static inline int read_long(Reader *reader, int64_t *value, Py_ssize_t row, const char *what) {
    if (reader->at < reader->end && !(*reader->at & 0x80)) {
        unsigned char byte = *reader->at++;
        *value = (int64_t)(byte >> 1) ^ -(int64_t)(byte & 1);
        return 0;
    }
    return read_long_slow(reader, value, row, what);
}

static int read_long_slow(Reader *reader, int64_t *value, Py_ssize_t row, const char *what) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (reader->at >= reader->end) {
            PyErr_Format(PyExc_ValueError, "row %zd: %s ends inside a varint", row, what);
            return -1;
        }
        unsigned char byte = *reader->at++;
        if (shift == 63 && (byte & 0x7e)) /* more than 64 bits */
            break;
        result |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            *value = (int64_t)(result >> 1) ^ -(int64_t)(result & 1);
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError, "row %zd: %s is a varint longer than 64 bits", row, what);
    return -1;
}

static inline int read_int(Reader *reader, int64_t *value, Py_ssize_t row, const char *what) {
    if (read_long(reader, value, row, what) < 0)
        return -1;
    if (*value < INT32_MIN || *value > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "row %zd: %s: %lld is out of an Avro int's range", row,
                     what, (long long)*value);
        return -1;
    }
    return 0;
}

static inline int read_bytes(Reader *reader, Py_ssize_t count, const unsigned char **bytes,
                      Py_ssize_t row, const char *what) {
    if (count < 0 || count > reader->end - reader->at) {
        PyErr_Format(PyExc_ValueError, "row %zd: %s: a length of %zd with %zd bytes left", row,
                     what, count, (Py_ssize_t)(reader->end - reader->at));
        return -1;
    }
    *bytes = reader->at;
    reader->at += count;
    return 0;
}

static inline int read_string(Reader *reader, const unsigned char **bytes, Py_ssize_t *count,
                       Py_ssize_t row, const char *what) {
    int64_t length;
    if (read_long(reader, &length, row, what) < 0)
        return -1;
    if (length < 0 || length > PY_SSIZE_T_MAX) {
        PyErr_Format(PyExc_ValueError, "row %zd: %s: negative length %lld", row, what,
                     (long long)length);
        return -1;
    }
    *count = (Py_ssize_t)length;
    return read_bytes(reader, *count, bytes, row, what);
}

/* The value of a field that is not null, appended to its column when kept. */
static int read_value(Column *column, Reader *reader, Py_ssize_t row, int keep) {
    const unsigned char *bytes;
    Py_ssize_t count;
    int64_t number;
    switch (column->code) {
    case OP_STRING:
        if (read_string(reader, &bytes, &count, row, "a string") < 0)
            return -1;
        return keep ? append_string(&column->values, bytes, (size_t)count) : 0;
    case OP_LONG:
        if (read_long(reader, &number, row, "a long") < 0)
            return -1;
        return keep ? append(&column->values, &number, 8) : 0; /* little-endian hosts only */
    case OP_INT: {
        if (read_int(reader, &number, row, "an int") < 0)
            return -1;
        int32_t narrow = (int32_t)number;
        return keep ? append(&column->values, &narrow, 4) : 0;
    }
    case OP_ENUM: {
        if (read_int(reader, &number, row, "an enum index") < 0)
            return -1;
        if (number < 0 || number >= column->symbol_count) {
            PyErr_Format(PyExc_ValueError, "row %zd: enum index %lld of %zd symbols", row,
                         (long long)number, column->symbol_count);
            return -1;
        }
        if (!keep)
            return 0;
        PyObject *symbol = PyTuple_GET_ITEM(column->symbols, (Py_ssize_t)number);
        return append_string(&column->values, (const unsigned char *)PyBytes_AS_STRING(symbol),
                             (size_t)PyBytes_GET_SIZE(symbol));
    }
    case OP_FIXED:
        if (read_bytes(reader, column->size, &bytes, row, "a fixed") < 0)
            return -1;
        return keep ? append(&column->values, bytes, (size_t)column->size) : 0;
    case OP_MAP:
        for (;;) {
            int64_t items;
            if (read_long(reader, &items, row, "a map block's count") < 0)
                return -1;
            if (items == 0)
                break;
            if (items < 0) { /* a negative count is followed by the block's byte size */
                int64_t ignored;
                if (items == INT64_MIN) {
                    PyErr_Format(PyExc_ValueError, "row %zd: a map block's count is out of "
                                 "range", row);
                    return -1;
                }
                items = -items;
                if (read_long(reader, &ignored, row, "a map block's size") < 0)
                    return -1;
            }
            for (int64_t item = 0; item < items; item++) {
                const unsigned char *value;
                Py_ssize_t value_count;
                if (read_string(reader, &bytes, &count, row, "a map key") < 0 ||
                    read_string(reader, &value, &value_count, row, "a map value") < 0)
                    return -1;
                if (keep && (append_string(&column->keys, bytes, (size_t)count) < 0 ||
                             append_string(&column->values, value, (size_t)value_count) < 0))
                    return -1;
                column->entries++;
            }
        }
        return keep ? append(&column->offsets, &column->entries, 8) : 0;
    }
    PyErr_SetString(PyExc_SystemError, "native_rows: unknown op");
    return -1;
}

/* A kept nullable column's default where the row has null. */
static int append_default(Column *column) {
    static const unsigned char zeros[64] = {0};
    switch (column->code) {
    case OP_STRING:
    case OP_ENUM:
        return append_leb128(&column->values, 0);
    case OP_LONG:
        return append(&column->values, zeros, 8);
    case OP_INT:
        return append(&column->values, zeros, 4);
    case OP_FIXED:
        for (Py_ssize_t left = column->size; left > 0; left -= 64)
            if (append(&column->values, zeros, left < 64 ? (size_t)left : 64) < 0)
                return -1;
        return 0;
    }
    PyErr_SetString(PyExc_SystemError, "native_rows: no default for this op");
    return -1;
}

static int read_field(Column *column, Reader *reader, Py_ssize_t row) {
    int keep = column->flags & FLAG_KEEP;
    if (!(column->flags & FLAG_NULLABLE))
        return read_value(column, reader, row, keep);
    int64_t branch;
    if (read_long(reader, &branch, row, "a union index") < 0)
        return -1;
    if (branch != 0 && branch != 1) {
        PyErr_Format(PyExc_ValueError, "row %zd: union index %lld of 2 branches", row,
                     (long long)branch);
        return -1;
    }
    unsigned char null = branch == ((column->flags & FLAG_NULL_SECOND) ? 1 : 0);
    if (keep && append(&column->nulls, &null, 1) < 0)
        return -1;
    if (null)
        return keep ? append_default(column) : 0;
    return read_value(column, reader, row, keep);
}

static int parse_ops(PyObject *ops, Column *columns, Py_ssize_t *count) {
    if (!PyTuple_CheckExact(ops) || PyTuple_GET_SIZE(ops) > MAX_OPS) {
        PyErr_SetString(PyExc_TypeError, "ops must be a tuple of at most 256 ops");
        return -1;
    }
    *count = PyTuple_GET_SIZE(ops);
    for (Py_ssize_t index = 0; index < *count; index++) {
        PyObject *op = PyTuple_GET_ITEM(ops, index);
        Column *column = &columns[index];
        PyObject *arg;
        if (!PyTuple_CheckExact(op) || PyTuple_GET_SIZE(op) != 3) {
            PyErr_SetString(PyExc_TypeError, "an op must be a (code, flags, arg) tuple");
            return -1;
        }
        arg = PyTuple_GET_ITEM(op, 2);
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(op, 0)) ||
            !PyLong_CheckExact(PyTuple_GET_ITEM(op, 1)) ||
            !(arg == Py_None || PyLong_CheckExact(arg) || PyTuple_CheckExact(arg))) {
            PyErr_SetString(PyExc_TypeError, "an op's code and flags must be ints, its arg "
                            "None, an int or a tuple");
            return -1;
        }
        column->code = (int)PyLong_AsLong(PyTuple_GET_ITEM(op, 0));
        column->flags = (int)PyLong_AsLong(PyTuple_GET_ITEM(op, 1));
        if (PyErr_Occurred())
            return -1;
        if (column->code < OP_STRING || column->code > OP_MAP ||
            ((column->flags & FLAG_NULLABLE) && column->code == OP_MAP)) {
            PyErr_SetString(PyExc_ValueError, "unknown op code, or a nullable map");
            return -1;
        }
        if (column->code == OP_FIXED) {
            column->size = PyLong_AsSsize_t(arg);
            if (column->size < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "a fixed's size must not be negative");
                return -1;
            }
        } else if (column->code == OP_ENUM) {
            if (!PyTuple_CheckExact(arg)) {
                PyErr_SetString(PyExc_TypeError, "an enum's symbols must be a tuple of bytes");
                return -1;
            }
            for (Py_ssize_t symbol = 0; symbol < PyTuple_GET_SIZE(arg); symbol++)
                if (!PyBytes_CheckExact(PyTuple_GET_ITEM(arg, symbol))) {
                    PyErr_SetString(PyExc_TypeError, "an enum's symbols must be bytes");
                    return -1;
                }
            column->symbols = arg;
            column->symbol_count = PyTuple_GET_SIZE(arg);
        }
    }
    return 0;
}

static int read_row(Column *columns, Py_ssize_t count, Py_ssize_t body_ops, PyObject *body,
                    Reader *suffix, Py_ssize_t row) {
    Reader reader = {(const unsigned char *)PyBytes_AS_STRING(body),
                     (const unsigned char *)PyBytes_AS_STRING(body) + PyBytes_GET_SIZE(body)};
    Reader tail = *suffix;
    for (Py_ssize_t index = 0; index < body_ops; index++)
        if (read_field(&columns[index], &reader, row) < 0)
            return -1;
    for (Py_ssize_t index = body_ops; index < count; index++)
        if (read_field(&columns[index], &tail, row) < 0)
            return -1;
    if (reader.at != reader.end || tail.at != tail.end) {
        PyErr_Format(PyExc_ValueError, "row %zd: %zd bytes left after the row's last field",
                     row, (Py_ssize_t)((reader.end - reader.at) + (tail.end - tail.at)));
        return -1;
    }
    return 0;
}

static size_t leb128_size(uint64_t value) {
    size_t size = 1;
    while (value >>= 7)
        size++;
    return size;
}

static char *put(char *at, const Buffer *buffer) {
    if (buffer->len)
        memcpy(at, buffer->data, buffer->len);
    return at + buffer->len;
}

/* The block, written straight into the bytes object returned: its size is known. */
static PyObject *assemble(Column *columns, Py_ssize_t count, PyObject *headers, Py_ssize_t rows) {
    Py_ssize_t kept = 0, header = 0;
    for (Py_ssize_t index = 0; index < count; index++)
        kept += (columns[index].flags & FLAG_KEEP) != 0;
    if (!PyTuple_CheckExact(headers) || PyTuple_GET_SIZE(headers) != kept) {
        PyErr_SetString(PyExc_ValueError, "headers must be a tuple, one per kept field");
        return NULL;
    }
    size_t size = leb128_size((uint64_t)kept) + leb128_size((uint64_t)rows);
    for (Py_ssize_t index = 0; index < kept; index++) {
        PyObject *encoded = PyTuple_GET_ITEM(headers, index);
        if (!PyBytes_CheckExact(encoded)) {
            PyErr_SetString(PyExc_TypeError, "a column header must be bytes");
            return NULL;
        }
        size += (size_t)PyBytes_GET_SIZE(encoded);
    }
    for (Py_ssize_t index = 0; index < count; index++) {
        Column *column = &columns[index];
        if (column->flags & FLAG_KEEP)
            size += column->nulls.len + column->offsets.len + column->keys.len +
                    column->values.len;
    }
    if (size > PY_SSIZE_T_MAX)
        return PyErr_NoMemory();
    PyObject *result = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)size);
    if (result == NULL)
        return NULL;
    char *at = put_leb128(PyBytes_AS_STRING(result), (uint64_t)kept);
    at = put_leb128(at, (uint64_t)rows);
    for (Py_ssize_t index = 0; index < count; index++) {
        Column *column = &columns[index];
        if (!(column->flags & FLAG_KEEP))
            continue;
        PyObject *encoded = PyTuple_GET_ITEM(headers, header++);
        memcpy(at, PyBytes_AS_STRING(encoded), (size_t)PyBytes_GET_SIZE(encoded));
        at += PyBytes_GET_SIZE(encoded);
        at = put(at, &column->nulls);
        at = put(at, &column->offsets);
        at = put(at, &column->keys);
        at = put(at, &column->values);
    }
    return result;
}

/* The columns' buffers, kept from call to call: freshly allocated ones of a few hundred
 * kilobytes are new pages each time, and faulting them in cost more than the rewriting. The
 * GIL is held throughout and no Python code runs, but a flag still refuses a reentrant call. */
static Column columns[MAX_OPS];
static int busy;
#define KEEP_BYTES (4u << 20) /* a buffer grown past this is freed after the call: what
                             * stays is at most about one insert's columns */

static void reset(Column *column) {
    column->code = column->flags = 0;
    column->size = column->symbol_count = 0;
    column->symbols = NULL;
    column->entries = 0;
    column->values.len = column->nulls.len = column->keys.len = column->offsets.len = 0;
}

static void trim(Buffer *buffer) {
    if (buffer->cap > KEEP_BYTES)
        release(buffer);
}

static PyObject *native_block(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    Py_ssize_t count = 0, body_ops;
    PyObject *result = NULL;
    (void)module;
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "native_block is not reentrant");
        return NULL;
    }
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "native_block(ops, headers, body_ops, parts) takes 4 arguments");
        return NULL;
    }
    PyObject *parts = args[3];
    body_ops = PyLong_AsSsize_t(args[2]);
    if (body_ops == -1 && PyErr_Occurred())
        return NULL;
    if (!PyList_CheckExact(parts)) {
        PyErr_SetString(PyExc_TypeError, "parts must be a list of (bodies, suffix) tuples");
        return NULL;
    }
    busy = 1;
    for (Py_ssize_t index = 0; index < MAX_OPS; index++)
        reset(&columns[index]);
    if (parse_ops(args[0], columns, &count) < 0)
        goto done;
    if (body_ops < 0 || body_ops > count) {
        PyErr_SetString(PyExc_ValueError, "body_ops must be within the ops");
        goto done;
    }
    Py_ssize_t rows = 0;
    for (Py_ssize_t part = 0; part < PyList_GET_SIZE(parts); part++) {
        PyObject *item = PyList_GET_ITEM(parts, part), *bodies, *suffix_bytes;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2 ||
            !PyList_CheckExact(bodies = PyTuple_GET_ITEM(item, 0)) ||
            !PyBytes_CheckExact(suffix_bytes = PyTuple_GET_ITEM(item, 1))) {
            PyErr_Format(PyExc_TypeError, "part %zd: not a (list of bodies, suffix bytes) "
                         "tuple", part);
            goto done;
        }
        Reader suffix = {(const unsigned char *)PyBytes_AS_STRING(suffix_bytes),
                         (const unsigned char *)PyBytes_AS_STRING(suffix_bytes) +
                             PyBytes_GET_SIZE(suffix_bytes)};
        for (Py_ssize_t row = 0; row < PyList_GET_SIZE(bodies); row++) {
            PyObject *body = PyList_GET_ITEM(bodies, row);
            if (!PyBytes_CheckExact(body)) {
                PyErr_Format(PyExc_TypeError, "part %zd row %zd: a body must be bytes", part,
                             row);
                goto done;
            }
            if (read_row(columns, count, body_ops, body, &suffix, row) < 0)
                goto done;
        }
        rows += PyList_GET_SIZE(bodies);
    }
    result = assemble(columns, count, args[1], rows);
done:
    for (Py_ssize_t index = 0; index < count; index++) {
        trim(&columns[index].values);
        trim(&columns[index].nulls);
        trim(&columns[index].keys);
        trim(&columns[index].offsets);
    }
    busy = 0;
    return result;
}

static PyMethodDef methods[] = {
    {"native_block", (PyCFunction)(void (*)(void))native_block, METH_FASTCALL,
     PyDoc_STR("native_block(ops, headers, body_ops, parts) -> bytes: Avro bodies as one "
               "ClickHouse Native block")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "authtrail._native_rows",
    .m_doc = PyDoc_STR("Avro record bodies to one ClickHouse Native block, in C."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__native_rows(void) {
#if PY_BIG_ENDIAN
#error "native_block writes numbers in the host's byte order: little-endian hosts only"
#endif
    return PyModule_Create(&module_def);
}
