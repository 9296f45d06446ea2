/* authtrail._speedups: the worker's per-event decode, leaf, chained body and the
 * detectors' reorder buffer in C (docs/PERFORMANCE.md).
 *
 * All are accelerators with the same contract as the Python code they stand in for; the
 * functions hand anything unusual back to it (they return None), so every error message
 * and every odd case stays owned by one implementation:
 *
 *   FlatReader(fields)(data, pos) -> dict | None
 *       authtrail/schemas/_flat_reader.py's generated reader: an Avro record whose fields
 *       are long, int, boolean, string, bytes, fixed, enum, map of strings, a union of
 *       null (first) and one of those (maps excepted), or such a record (the event in a
 *       chained record). None for a body it would leave to fastavro: truncated or
 *       trailing bytes, bad UTF-8, a negative length, a union branch or enum index out of
 *       range, an enum index of more than one byte, a varint beyond 64 bits, an int
 *       beyond 32, a boolean byte other than 0 or 1, map blocks with a byte size.
 *
 *   FlatWriter(fields, slow)(record) -> bytes
 *       authtrail/schemas/_flat_writer.py's generated front: a plain dict of exact types
 *       (int, bool, bytes, str, dict of str, None) written as Avro; anything else (another
 *       Mapping, a subclass, a wrong type or size, a number out of range, a missing field
 *       without default, a key the schema lacks, text UTF-8 cannot encode) goes to
 *       ``slow(record)``, the checked writer, which owns every error.
 *
 *   leaf_v1(event, layout, magic) -> bytes | None
 *       authtrail/stream/core/canonical.py's version-1 leaf of a plain dict whose values
 *       are exact str, int, None or dict of str to str, with ``layout`` the cached
 *       ``(name, str(name) || b"s", str(name) || b"i")`` triples in leaf order. None for
 *       anything else (a missing key, another type, text UTF-8 cannot encode, an integer
 *       beyond 64 bits, a value over 4 GiB): the Python path then encodes it or raises.
 *       The sealed-value (v2) check stays in Python, on the returned bytes.
 *
 *   chained_body(value, header, link, partition, offset, epoch, index) -> bytes | None
 *       stream/worker/sequencing.py's chained record body of a sequenced event: the
 *       Avro body of the event's single-object ``value`` (after ``header``, its codec's
 *       marker and fingerprint) followed by schemas/chained_record.avsc's other fields,
 *       from ``link`` (a ChainLink: seq, prev_hash, leaf_hash, hash) and the input
 *       position. None unless value starts with header and every value is of its
 *       field's exact type and range (a long, three 32-byte bytes, an int, two longs, a
 *       null or an int): the codec then writes it, or raises.
 *
 *   ReorderBuffer()
 *       stream/detection/event_time.py's ReorderBuffer, method for method (oldest() for
 *       the pending deque's front, _load() for from_state()), which the detectors make
 *       through event_time.new_order(); values stay Python objects, compared as Python
 *       compares them. tests/unit/test_event_time.py compares it with the Python buffer.
 *
 * tests/unit/test_speedups.py compares the others with the Python code on generated,
 * mutated and hand-made inputs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ flat reader */

/* The field kinds of both the reader and the writer (NATIVE_KINDS in
 * authtrail/schemas/_flat_writer.py); a nested record is the reader's alone. */
enum {
    KIND_LONG = 0, KIND_STRING = 1, KIND_ENUM = 2, KIND_MAP = 3, KIND_INT = 4,
    KIND_BOOLEAN = 5, KIND_BYTES = 6, KIND_FIXED = 7, KIND_RECORD = 8
};

typedef struct {
    PyObject *name;    /* the dict key (a str, kept alive by the reader) */
    int kind;
    int optional;      /* a union of null (branch 0) and the kind (branch 1) */
    PyObject *extra;   /* enum: a tuple of str; record: its FlatReader; else NULL */
    Py_ssize_t size;   /* fixed: its size */
} Field;

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    Field *fields;
} FlatReader;

static PyTypeObject FlatReaderType;

/* A cursor over one body; every read returns 0 on success, -1 for "unusual" (no Python
 * error set) and -2 when a Python error is set (memory). */
typedef struct {
    const unsigned char *data;
    Py_ssize_t pos;
    Py_ssize_t length;
} Cursor;

/* The raw (still zig-zag encoded) varint at the cursor; unusual beyond 64 bits. */
static int read_varint(Cursor *c, uint64_t *out) {
    uint64_t number = 0;
    int shift = 0;
    for (;;) {
        if (c->pos >= c->length) return -1;
        unsigned char byte = c->data[c->pos++];
        if (shift == 63 && byte > 1) return -1;
        number |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) {
            *out = number;
            return 0;
        }
        shift += 7;
    }
}

/* A string (``text``) or bytes: a length, then as many bytes. */
static int read_sized(Cursor *c, PyObject **out, int text) {
    uint64_t size;
    if (read_varint(c, &size) < 0 || (size & 1)) return -1;
    size >>= 1;
    if (size > (uint64_t)(c->length - c->pos)) return -1;
    const char *start = (const char *)c->data + c->pos;
    PyObject *value = text ? PyUnicode_DecodeUTF8(start, (Py_ssize_t)size, "strict")
                           : PyBytes_FromStringAndSize(start, (Py_ssize_t)size);
    if (value == NULL) {
        if (!text || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return -2;
        PyErr_Clear();
        return -1;
    }
    c->pos += (Py_ssize_t)size;
    *out = value;
    return 0;
}

static int read_string(Cursor *c, PyObject **out) { return read_sized(c, out, 1); }

static int read_map(Cursor *c, PyObject **out) {
    PyObject *entries = PyDict_New();
    if (entries == NULL) return -2;
    for (;;) {
        uint64_t count;
        if (read_varint(c, &count) < 0) goto unusual;
        if (count == 0) break;
        if (count & 1) goto unusual; /* a negative count: a block with its byte size */
        for (count >>= 1; count > 0; count--) {
            PyObject *key, *value;
            int status = read_string(c, &key);
            if (status < 0) {
                Py_DECREF(entries);
                return status;
            }
            status = read_string(c, &value);
            if (status < 0) {
                Py_DECREF(key);
                Py_DECREF(entries);
                return status;
            }
            status = PyDict_SetItem(entries, key, value); /* a repeated key: the last wins */
            Py_DECREF(key);
            Py_DECREF(value);
            if (status < 0) {
                Py_DECREF(entries);
                return -2;
            }
        }
    }
    *out = entries;
    return 0;
unusual:
    Py_DECREF(entries);
    return -1;
}

static int read_record(const FlatReader *reader, Cursor *c, PyObject **out);

static int read_field(Cursor *c, const Field *field, PyObject **out) {
    if (field->optional) {
        if (c->pos >= c->length) return -1;
        unsigned char branch = c->data[c->pos++];
        if (branch == 0) {
            *out = Py_NewRef(Py_None);
            return 0;
        }
        if (branch != 2) return -1;
    }
    switch (field->kind) {
    case KIND_LONG:
    case KIND_INT: {
        uint64_t raw;
        if (read_varint(c, &raw) < 0) return -1;
        int64_t value = (int64_t)(raw >> 1) ^ -(int64_t)(raw & 1);
        if (field->kind == KIND_INT && (value < INT32_MIN || value > INT32_MAX)) return -1;
        *out = PyLong_FromLongLong(value);
        return *out == NULL ? -2 : 0;
    }
    case KIND_STRING:
        return read_string(c, out);
    case KIND_BYTES:
        return read_sized(c, out, 0);
    case KIND_ENUM: {
        if (c->pos >= c->length) return -1;
        unsigned char index = c->data[c->pos++];
        if ((index & 0x81) || (Py_ssize_t)(index >> 1) >= PyTuple_GET_SIZE(field->extra))
            return -1;
        *out = Py_NewRef(PyTuple_GET_ITEM(field->extra, index >> 1));
        return 0;
    }
    case KIND_BOOLEAN:
        if (c->pos >= c->length || c->data[c->pos] > 1) return -1;
        *out = Py_NewRef(c->data[c->pos++] ? Py_True : Py_False);
        return 0;
    case KIND_FIXED:
        if (field->size > c->length - c->pos) return -1;
        *out = PyBytes_FromStringAndSize((const char *)c->data + c->pos, field->size);
        if (*out == NULL) return -2;
        c->pos += field->size;
        return 0;
    case KIND_RECORD:
        return read_record((const FlatReader *)field->extra, c, out);
    default:
        return read_map(c, out);
    }
}

/* The record at the cursor, its fields in schema order; the cursor stops after it. */
static int read_record(const FlatReader *reader, Cursor *c, PyObject **out) {
    PyObject *record = PyDict_New();
    if (record == NULL) return -2;
    for (Py_ssize_t i = 0; i < reader->count; i++) {
        PyObject *value;
        int status = read_field(c, &reader->fields[i], &value);
        if (status < 0) {
            Py_DECREF(record);
            return status;
        }
        status = PyDict_SetItem(record, reader->fields[i].name, value);
        Py_DECREF(value);
        if (status < 0) {
            Py_DECREF(record);
            return -2;
        }
    }
    *out = record;
    return 0;
}

static PyObject *FlatReader_call(FlatReader *self, PyObject *args, PyObject *kwargs) {
    Py_buffer view;
    Py_ssize_t pos;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "FlatReader takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "y*n:FlatReader", &view, &pos)) return NULL;
    if (pos < 0 || pos > view.len) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    Cursor c = {(const unsigned char *)view.buf, pos, view.len};
    PyObject *record = NULL;
    int status = read_record(self, &c, &record);
    PyBuffer_Release(&view);
    if (status == -2) return NULL;
    if (status == -1 || c.pos != c.length) {
        Py_XDECREF(record);
        Py_RETURN_NONE;
    }
    return record;
}

static void FlatReader_dealloc(FlatReader *self) {
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Py_XDECREF(self->fields[i].name);
        Py_XDECREF(self->fields[i].extra);
    }
    PyMem_Free(self->fields);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* FlatReader(fields): ``fields`` a sequence of (name: str, kind: int, optional: bool,
 * extra), kind 0 long, 1 string, 2 enum, 3 map of strings, 4 int, 5 boolean, 6 bytes,
 * 7 fixed, 8 record; ``extra`` the symbols (a tuple of str) of an enum, the size (int) of
 * a fixed, the FlatReader of a record, else None. */
static PyObject *FlatReader_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *spec;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "FlatReader takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:FlatReader", &spec)) return NULL;
    PyObject *items = PySequence_Tuple(spec);
    if (items == NULL) return NULL;
    FlatReader *self = (FlatReader *)type->tp_alloc(type, 0);
    if (self == NULL) goto fail;
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    self->fields = PyMem_Calloc(count ? (size_t)count : 1, sizeof(Field));
    if (self->fields == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name, *extra;
        int kind, optional;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(items, i), "UipO:field", &name, &kind, &optional,
                              &extra))
            goto fail;
        if (kind < KIND_LONG || kind > KIND_RECORD) {
            PyErr_Format(PyExc_ValueError, "field kind %d is not 0..8", kind);
            goto fail;
        }
        Py_ssize_t size = 0;
        if (kind == KIND_FIXED) {
            size = PyLong_Check(extra) ? PyLong_AsSsize_t(extra) : -1;
            if (size < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "a fixed field takes its size, an int >= 0");
                goto fail;
            }
        } else if ((kind == KIND_ENUM) != PyTuple_Check(extra) ||
                   (kind == KIND_RECORD) != PyObject_TypeCheck(extra, &FlatReaderType) ||
                   (kind != KIND_ENUM && kind != KIND_RECORD && extra != Py_None)) {
            PyErr_SetString(PyExc_ValueError, "an enum field (and only one) takes a tuple of "
                                              "symbols, a record field its FlatReader");
            goto fail;
        }
        if ((kind == KIND_MAP || kind == KIND_RECORD) && optional) {
            PyErr_SetString(PyExc_ValueError, "an optional map or record is not read here");
            goto fail;
        }
        Field *field = &self->fields[i];
        field->name = Py_NewRef(name);
        field->kind = kind;
        field->optional = optional;
        field->extra = kind == KIND_ENUM || kind == KIND_RECORD ? Py_NewRef(extra) : NULL;
        field->size = size;
        self->count = i + 1;
    }
    Py_DECREF(items);
    return (PyObject *)self;
fail:
    Py_DECREF(items);
    Py_XDECREF(self);
    return NULL;
}

static PyTypeObject FlatReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.FlatReader",
    .tp_doc = PyDoc_STR("FlatReader(fields)(data, pos) -> dict | None: a flat Avro record"),
    .tp_basicsize = sizeof(FlatReader),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = FlatReader_new,
    .tp_dealloc = (destructor)FlatReader_dealloc,
    .tp_call = (ternaryfunc)FlatReader_call,
};

/* ------------------------------------------------------------- canonical leaf */

typedef struct {
    const char *data;
    Py_ssize_t size;
} Span;

typedef struct {
    Span key;
    Span value;
} Entry;

static int compare_entries(const void *left, const void *right) {
    const Span *a = &((const Entry *)left)->key, *b = &((const Entry *)right)->key;
    int order = memcmp(a->data, b->data, (size_t)(a->size < b->size ? a->size : b->size));
    if (order != 0) return order;
    return (a->size > b->size) - (a->size < b->size);
}

/* A growing output buffer. */
typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Out;

static int out_reserve(Out *out, Py_ssize_t more) {
    if (out->size + more <= out->capacity) return 0;
    Py_ssize_t capacity = out->capacity * 2;
    if (capacity < out->size + more) capacity = out->size + more;
    char *data = PyMem_Realloc(out->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    out->data = data;
    out->capacity = capacity;
    return 0;
}

static int out_bytes(Out *out, const char *data, Py_ssize_t size) {
    if (out_reserve(out, size) < 0) return -1;
    memcpy(out->data + out->size, data, (size_t)size);
    out->size += size;
    return 0;
}

static int out_u32(Out *out, uint64_t value) {
    if (out_reserve(out, 4) < 0) return -1;
    unsigned char *p = (unsigned char *)out->data + out->size;
    p[0] = (unsigned char)(value >> 24);
    p[1] = (unsigned char)(value >> 16);
    p[2] = (unsigned char)(value >> 8);
    p[3] = (unsigned char)value;
    out->size += 4;
    return 0;
}

/* u32(len) || data; 1 if the value is over 4 GiB (the Python path raises). */
static int out_framed(Out *out, const char *data, Py_ssize_t size) {
    if ((uint64_t)size > 0xFFFFFFFFu) return 1;
    if (out_u32(out, (uint64_t)size) < 0 || out_bytes(out, data, size) < 0) return -1;
    return 0;
}

/* The UTF-8 of an exact str; 1 (no error set) if it has none (lone surrogates). */
static int utf8_of(PyObject *text, Span *span) {
    span->data = PyUnicode_AsUTF8AndSize(text, &span->size);
    if (span->data != NULL) return 0;
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) return -1;
    PyErr_Clear();
    return 1;
}

/* A map field: str(name) || "m" || u32(count) || (str(key) || str(value))*, entries sorted
 * by key bytes; 1 for a map the Python path must see. */
static int out_map(Out *out, PyObject *string_prefix, PyObject *map) {
    Py_ssize_t count = PyDict_GET_SIZE(map), i = 0, position = 0;
    PyObject *key, *value;
    Entry *entries = PyMem_Malloc((size_t)count * sizeof(Entry));
    if (entries == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int status = 0;
    while (PyDict_Next(map, &position, &key, &value)) {
        if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(value)) {
            status = 1;
            goto done;
        }
        if ((status = utf8_of(key, &entries[i].key)) != 0) goto done;
        if ((status = utf8_of(value, &entries[i].value)) != 0) goto done;
        i++;
    }
    qsort(entries, (size_t)count, sizeof(Entry), compare_entries);
    Py_ssize_t prefix_size = PyBytes_GET_SIZE(string_prefix) - 1; /* without the "s" */
    if ((uint64_t)count > 0xFFFFFFFFu) {
        status = 1;
        goto done;
    }
    if (out_bytes(out, PyBytes_AS_STRING(string_prefix), prefix_size) < 0 ||
        out_bytes(out, "m", 1) < 0 || out_u32(out, (uint64_t)count) < 0) {
        status = -1;
        goto done;
    }
    for (i = 0; i < count; i++) {
        if ((status = out_framed(out, entries[i].key.data, entries[i].key.size)) != 0) goto done;
        if ((status = out_framed(out, entries[i].value.data, entries[i].value.size)) != 0)
            goto done;
    }
done:
    PyMem_Free(entries);
    return status;
}

static PyObject *leaf_v1(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyTuple_CheckExact(args[1]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "leaf_v1(event, layout: tuple, magic: bytes)");
        return NULL;
    }
    PyObject *event = args[0], *layout = args[1], *magic = args[2];
    if (!PyDict_CheckExact(event)) Py_RETURN_NONE;
    Out out = {PyMem_Malloc(512), 0, 512};
    if (out.data == NULL) return PyErr_NoMemory();
    int status = out_bytes(&out, PyBytes_AS_STRING(magic), PyBytes_GET_SIZE(magic));
    Py_ssize_t fields = PyTuple_GET_SIZE(layout);
    for (Py_ssize_t i = 0; i < fields && status == 0; i++) {
        PyObject *entry = PyTuple_GET_ITEM(layout, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3) {
            status = 1;
            break;
        }
        PyObject *string_prefix = PyTuple_GET_ITEM(entry, 1);
        PyObject *integer_prefix = PyTuple_GET_ITEM(entry, 2);
        if (!PyBytes_CheckExact(string_prefix) || !PyBytes_CheckExact(integer_prefix) ||
            PyBytes_GET_SIZE(string_prefix) < 1) {
            status = 1;
            break;
        }
        PyObject *value = PyDict_GetItemWithError(event, PyTuple_GET_ITEM(entry, 0));
        if (value == NULL) {
            status = PyErr_Occurred() ? -1 : 1;
        } else if (value == Py_None) {
            continue;
        } else if (PyUnicode_CheckExact(value)) {
            Span text;
            status = utf8_of(value, &text);
            if (status == 0)
                status = out_bytes(&out, PyBytes_AS_STRING(string_prefix),
                                   PyBytes_GET_SIZE(string_prefix));
            if (status == 0) status = out_framed(&out, text.data, text.size);
        } else if (PyLong_CheckExact(value)) {
            int overflow;
            long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow) {
                status = 1; /* beyond 64 bits: the Python path's "%d" */
            } else if (number == -1 && PyErr_Occurred()) {
                status = -1;
            } else {
                char digits[24];
                int size = snprintf(digits, sizeof digits, "%lld", number);
                status = out_bytes(&out, PyBytes_AS_STRING(integer_prefix),
                                   PyBytes_GET_SIZE(integer_prefix));
                if (status == 0) status = out_framed(&out, digits, size);
            }
        } else if (PyDict_CheckExact(value)) {
            if (PyDict_GET_SIZE(value) != 0) status = out_map(&out, string_prefix, value);
        } else {
            status = 1;
        }
    }
    PyObject *leaf = NULL;
    if (status == 0) {
        leaf = PyBytes_FromStringAndSize(out.data, out.size);
    } else if (status > 0) {
        leaf = Py_NewRef(Py_None);
    }
    PyMem_Free(out.data);
    return leaf;
}

/* ------------------------------------------------------------------ flat writer */

typedef struct {
    PyObject *name;
    int kind;
    int optional;
    PyObject *default_bytes; /* the encoded default (bytes), or NULL: required */
    PyObject *symbols;       /* enum: dict of symbol -> encoded index (bytes) */
    Py_ssize_t size;         /* fixed: its size */
} WriterField;

typedef struct {
    PyObject_HEAD
    Py_ssize_t count;
    WriterField *fields;
    PyObject *names; /* frozenset of the field names */
    PyObject *slow;  /* the checked writer: everything unusual, and every error */
} FlatWriter;

static int out_varint(Out *out, uint64_t value) {
    if (out_reserve(out, 10) < 0) return -1;
    unsigned char *p = (unsigned char *)out->data + out->size;
    Py_ssize_t n = 0;
    while (value > 0x7F) {
        p[n++] = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    p[n++] = (unsigned char)value;
    out->size += n;
    return 0;
}

static int out_avro_bytes(Out *out, const char *data, Py_ssize_t size) {
    if (out_varint(out, (uint64_t)size << 1) < 0) return -1;
    return out_bytes(out, data, size);
}

/* One string of a map or field: 1 (no error set) for text UTF-8 cannot encode. */
static int out_avro_text(Out *out, PyObject *text) {
    Span span;
    int status = utf8_of(text, &span);
    if (status != 0) return status;
    return out_avro_bytes(out, span.data, span.size);
}

/* A value of ``field``: 0 written, 1 for the checked writer, -1 error set. */
static int write_value(Out *out, const WriterField *field, PyObject *value) {
    switch (field->kind) {
    case KIND_LONG:
    case KIND_INT: {
        if (!PyLong_CheckExact(value)) return 1;
        int overflow;
        long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
        if (overflow) return 1;
        if (number == -1 && PyErr_Occurred()) return -1;
        if (field->kind == KIND_INT && (number < INT32_MIN || number > INT32_MAX)) return 1;
        uint64_t zigzag = ((uint64_t)number << 1) ^ (uint64_t)(number >> 63);
        return out_varint(out, zigzag);
    }
    case KIND_STRING:
        if (!PyUnicode_CheckExact(value)) return 1;
        return out_avro_text(out, value);
    case KIND_ENUM: {
        if (!PyUnicode_CheckExact(value)) return 1;
        PyObject *encoded = PyDict_GetItemWithError(field->symbols, value);
        if (encoded == NULL) return PyErr_Occurred() ? -1 : 1;
        return out_bytes(out, PyBytes_AS_STRING(encoded), PyBytes_GET_SIZE(encoded));
    }
    case KIND_MAP: {
        if (!PyDict_CheckExact(value)) return 1;
        Py_ssize_t count = PyDict_GET_SIZE(value), position = 0;
        PyObject *key, *item;
        if (count != 0) {
            if (out_varint(out, (uint64_t)count << 1) < 0) return -1;
            while (PyDict_Next(value, &position, &key, &item)) {
                if (!PyUnicode_CheckExact(key) || !PyUnicode_CheckExact(item)) return 1;
                int status = out_avro_text(out, key);
                if (status == 0) status = out_avro_text(out, item);
                if (status != 0) return status;
            }
        }
        return out_bytes(out, "\x00", 1);
    }
    case KIND_BOOLEAN:
        if (value == Py_True) return out_bytes(out, "\x01", 1);
        if (value == Py_False) return out_bytes(out, "\x00", 1);
        return 1;
    case KIND_BYTES:
        if (!PyBytes_CheckExact(value)) return 1;
        return out_avro_bytes(out, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
    default: /* KIND_FIXED */
        if (!PyBytes_CheckExact(value) || PyBytes_GET_SIZE(value) != field->size) return 1;
        return out_bytes(out, PyBytes_AS_STRING(value), field->size);
    }
}

/* 0: ``record`` written to ``out``; 1: for the checked writer; -1: error set. */
static int write_record(FlatWriter *self, PyObject *record, Out *out) {
    int defaulted = 0;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        const WriterField *field = &self->fields[i];
        PyObject *value = PyDict_GetItemWithError(record, field->name);
        int status;
        if (value == NULL) {
            if (PyErr_Occurred()) return -1;
            if (field->default_bytes == NULL) return 1;
            defaulted = 1;
            status = out_bytes(out, PyBytes_AS_STRING(field->default_bytes),
                               PyBytes_GET_SIZE(field->default_bytes));
        } else if (field->optional && value == Py_None) {
            status = out_bytes(out, "\x00", 1);
        } else {
            status = field->optional ? out_bytes(out, "\x02", 1) : 0;
            if (status == 0) status = write_value(out, field, value);
        }
        if (status != 0) return status;
    }
    if (defaulted || PyDict_GET_SIZE(record) != self->count) {
        Py_ssize_t position = 0;
        PyObject *key, *item;
        while (PyDict_Next(record, &position, &key, &item)) {
            int known = PySet_Contains(self->names, key);
            if (known < 0) {
                if (!PyErr_ExceptionMatches(PyExc_TypeError)) return -1;
                PyErr_Clear(); /* an unhashable key: not a field */
                return 1;
            }
            if (!known) return 1;
        }
    }
    return 0;
}

static PyObject *FlatWriter_call(FlatWriter *self, PyObject *args, PyObject *kwargs) {
    PyObject *record;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "FlatWriter takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:FlatWriter", &record)) return NULL;
    if (!PyDict_CheckExact(record)) return PyObject_CallOneArg(self->slow, record);
    Out out = {PyMem_Malloc(256), 0, 256};
    if (out.data == NULL) return PyErr_NoMemory();
    int status = write_record(self, record, &out);
    PyObject *result = NULL;
    if (status == 0) {
        result = PyBytes_FromStringAndSize(out.data, out.size);
    } else if (status > 0) {
        result = PyObject_CallOneArg(self->slow, record);
    }
    PyMem_Free(out.data);
    return result;
}

static void FlatWriter_dealloc(FlatWriter *self) {
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Py_XDECREF(self->fields[i].name);
        Py_XDECREF(self->fields[i].default_bytes);
        Py_XDECREF(self->fields[i].symbols);
    }
    PyMem_Free(self->fields);
    Py_XDECREF(self->names);
    Py_XDECREF(self->slow);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* FlatWriter(fields, slow): ``fields`` a sequence of (name, kind, optional, default,
 * extra): kind as in the reader plus 4 int, 5 boolean, 6 bytes, 7 fixed; default the
 * encoded default (bytes) or None; extra an enum's dict of symbol -> encoded index, a
 * fixed's size, else None. ``slow(record)`` is called for anything else. */
static PyObject *FlatWriter_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *spec, *slow;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "FlatWriter takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO:FlatWriter", &spec, &slow)) return NULL;
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "FlatWriter: slow must be callable");
        return NULL;
    }
    PyObject *items = PySequence_Tuple(spec);
    if (items == NULL) return NULL;
    FlatWriter *self = (FlatWriter *)type->tp_alloc(type, 0);
    if (self == NULL) goto fail;
    Py_ssize_t count = PyTuple_GET_SIZE(items);
    self->fields = PyMem_Calloc(count ? (size_t)count : 1, sizeof(WriterField));
    self->names = PyFrozenSet_New(NULL);
    if (self->fields == NULL || self->names == NULL) {
        if (self->fields == NULL) PyErr_NoMemory();
        goto fail;
    }
    self->slow = Py_NewRef(slow);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name, *default_bytes, *extra;
        int kind, optional;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(items, i), "UipOO:field", &name, &kind,
                              &optional, &default_bytes, &extra))
            goto fail;
        if (kind < KIND_LONG || kind > KIND_FIXED) {
            PyErr_Format(PyExc_ValueError, "field kind %d is not 0..7", kind);
            goto fail;
        }
        if (default_bytes != Py_None && !PyBytes_CheckExact(default_bytes)) {
            PyErr_SetString(PyExc_TypeError, "a default is its encoding (bytes) or None");
            goto fail;
        }
        WriterField *field = &self->fields[i];
        if (kind == KIND_ENUM) {
            if (!PyDict_CheckExact(extra)) {
                PyErr_SetString(PyExc_ValueError, "an enum takes a dict of encoded symbols");
                goto fail;
            }
            PyObject *key, *value;
            Py_ssize_t position = 0;
            while (PyDict_Next(extra, &position, &key, &value)) {
                if (!PyBytes_CheckExact(value)) {
                    PyErr_SetString(PyExc_ValueError, "an encoded symbol is bytes");
                    goto fail;
                }
            }
            field->symbols = Py_NewRef(extra);
        } else if (kind == KIND_FIXED) {
            field->size = PyLong_AsSsize_t(extra);
            if (field->size < 0) {
                if (!PyErr_Occurred())
                    PyErr_SetString(PyExc_ValueError, "a fixed size is >= 0");
                goto fail;
            }
        } else if (extra != Py_None) {
            PyErr_SetString(PyExc_ValueError, "only an enum or a fixed takes extra");
            goto fail;
        }
        field->name = Py_NewRef(name);
        field->kind = kind;
        field->optional = optional;
        field->default_bytes = default_bytes == Py_None ? NULL : Py_NewRef(default_bytes);
        self->count = i + 1;
        if (PySet_Add(self->names, name) < 0) goto fail;
    }
    Py_DECREF(items);
    return (PyObject *)self;
fail:
    Py_DECREF(items);
    Py_XDECREF(self);
    return NULL;
}

static PyMemberDef FlatWriter_members[] = {
    {"slow", T_OBJECT, offsetof(FlatWriter, slow), READONLY, "the checked writer"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FlatWriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.FlatWriter",
    .tp_doc = PyDoc_STR("FlatWriter(fields, slow)(record) -> bytes: a flat Avro record"),
    .tp_basicsize = sizeof(FlatWriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = FlatWriter_new,
    .tp_dealloc = (destructor)FlatWriter_dealloc,
    .tp_call = (ternaryfunc)FlatWriter_call,
    .tp_members = FlatWriter_members,
};

/* ------------------------------------------------------------------ chained body */

/* An Avro long or int (zigzag varint) at p; returns the byte after it. */
static unsigned char *put_zigzag(unsigned char *p, long long number) {
    uint64_t value = ((uint64_t)number << 1) ^ (uint64_t)(number >> 63);
    while (value > 0x7F) {
        *p++ = (unsigned char)((value & 0x7F) | 0x80);
        value >>= 7;
    }
    *p++ = (unsigned char)value;
    return p;
}

/* An exact int within [low, high] into out: 1, 0 (left to Python) or -1 (error set). */
static int exact_int_in(PyObject *value, long long low, long long high, long long *out) {
    if (!PyLong_CheckExact(value)) return 0;
    int overflow;
    *out = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (*out == -1 && PyErr_Occurred()) return -1;
    return !overflow && *out >= low && *out <= high;
}

#define CHAINED_HASH 32

static PyObject *chained_body(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "chained_body(value, header, link, partition, offset, "
                                         "epoch, index) takes 7 arguments");
        return NULL;
    }
    PyObject *value = args[0], *header = args[1], *link = args[2], *index = args[6];
    if (!PyBytes_CheckExact(value) || !PyBytes_CheckExact(header) || !PyTuple_Check(link) ||
        PyTuple_GET_SIZE(link) != 4)
        Py_RETURN_NONE;
    Py_ssize_t header_size = PyBytes_GET_SIZE(header), value_size = PyBytes_GET_SIZE(value);
    if (value_size < header_size ||
        memcmp(PyBytes_AS_STRING(value), PyBytes_AS_STRING(header), (size_t)header_size) != 0)
        Py_RETURN_NONE;
    /* ChainLink's order; the record's is seq, prev_hash, hash, leaf_hash. */
    PyObject *prev = PyTuple_GET_ITEM(link, 1), *leaf = PyTuple_GET_ITEM(link, 2);
    PyObject *hash = PyTuple_GET_ITEM(link, 3);
    PyObject *hashes[] = {prev, hash, leaf};
    for (int i = 0; i < 3; i++)
        if (!PyBytes_CheckExact(hashes[i]) || PyBytes_GET_SIZE(hashes[i]) != CHAINED_HASH)
            Py_RETURN_NONE;
    long long seq, partition, offset, epoch, position = 0;
    int status;
    if ((status = exact_int_in(PyTuple_GET_ITEM(link, 0), LLONG_MIN, LLONG_MAX, &seq)) != 1 ||
        (status = exact_int_in(args[3], INT32_MIN, INT32_MAX, &partition)) != 1 ||
        (status = exact_int_in(args[4], LLONG_MIN, LLONG_MAX, &offset)) != 1 ||
        (status = exact_int_in(args[5], LLONG_MIN, LLONG_MAX, &epoch)) != 1 ||
        (index != Py_None &&
         (status = exact_int_in(index, INT32_MIN, INT32_MAX, &position)) != 1)) {
        if (status < 0) return NULL;
        Py_RETURN_NONE;
    }
    unsigned char tail[3 * CHAINED_HASH + 5 * 10 + 1], *p = tail;
    p = put_zigzag(p, seq);
    for (int i = 0; i < 3; i++, p += CHAINED_HASH)
        memcpy(p, PyBytes_AS_STRING(hashes[i]), CHAINED_HASH);
    p = put_zigzag(p, partition);
    p = put_zigzag(p, offset);
    p = put_zigzag(p, epoch);
    if (index == Py_None) {
        *p++ = 0; /* the union's null branch */
    } else {
        *p++ = 2; /* its int branch (1, zigzag) */
        p = put_zigzag(p, position);
    }
    Py_ssize_t body_size = value_size - header_size, tail_size = p - tail;
    PyObject *body = PyBytes_FromStringAndSize(NULL, body_size + tail_size);
    if (body == NULL) return NULL;
    memcpy(PyBytes_AS_STRING(body), PyBytes_AS_STRING(value) + header_size, (size_t)body_size);
    memcpy(PyBytes_AS_STRING(body) + body_size, tail, (size_t)tail_size);
    return body;
}

/* ------------------------------------------------------------------ reorder buffer */

/* stream/detection/event_time.py's ReorderBuffer, method for method (that file has the
 * semantics; this one only what C needs to say). Values keep their Python objects and
 * are compared as Python compares them, so any int behaves as there. Pending events are
 * the (occurred_at, event_id, payload) tuples offer() was given (or from_state() built),
 * in (occurred_at, event_id) order from index head on; the expiry heap holds the
 * (occurred_at, event_id) of every remembered id. */

typedef struct {
    PyObject *at, *id;
} Expiry;

typedef struct {
    PyObject_HEAD
    PyObject *watermark;  /* an int or None */
    PyObject *frontier;   /* (occurred_at, event_id) or None */
    PyObject *recent_ids; /* dict: event_id -> occurred_at */
    PyObject **pending;
    Py_ssize_t head, end, capacity;
    Expiry *expiry;
    Py_ssize_t expiries, expiry_capacity;
} Reorder;

static PyTypeObject ReorderType;
static PyObject *accepted_text, *late_text, *duplicate_text, *one;

/* a < b as Python says; -1 with an error set. */
static int less(PyObject *a, PyObject *b) { return PyObject_RichCompareBool(a, b, Py_LT); }

/* (a_at, a_id) < (b_at, b_id) as tuples compare; -1 on error. */
static int key_less(PyObject *a_at, PyObject *a_id, PyObject *b_at, PyObject *b_id) {
    int equal = PyObject_RichCompareBool(a_at, b_at, Py_EQ);
    if (equal < 0) return -1;
    return equal ? less(a_id, b_id) : less(a_at, b_at);
}

/* max(watermark, floor) - lateness, or None (a new reference; NULL on error). */
static PyObject *reorder_cutoff_of(Reorder *self, PyObject *lateness, PyObject *floor) {
    PyObject *mark = self->watermark;
    if (floor != Py_None) {
        if (mark == Py_None) {
            mark = floor;
        } else {
            int later = PyObject_RichCompareBool(floor, mark, Py_GT);
            if (later < 0) return NULL;
            if (later) mark = floor;
        }
    }
    if (mark == Py_None) Py_RETURN_NONE;
    return PyNumber_Subtract(mark, lateness);
}

static int expiry_push(Reorder *self, PyObject *at, PyObject *id) {
    if (self->expiries == self->expiry_capacity) {
        Py_ssize_t capacity = self->expiry_capacity ? 2 * self->expiry_capacity : 4;
        Expiry *grown = PyMem_Realloc(self->expiry, (size_t)capacity * sizeof(Expiry));
        if (grown == NULL) return PyErr_NoMemory(), -1;
        self->expiry = grown;
        self->expiry_capacity = capacity;
    }
    Py_ssize_t i = self->expiries++;
    Expiry item = {Py_NewRef(at), Py_NewRef(id)};
    while (i > 0) { /* sift up */
        Py_ssize_t parent = (i - 1) / 2;
        int smaller = key_less(item.at, item.id, self->expiry[parent].at, self->expiry[parent].id);
        if (smaller < 0) {
            self->expiry[i] = item; /* keep the heap whole for dealloc; order no longer matters */
            return -1;
        }
        if (!smaller) break;
        self->expiry[i] = self->expiry[parent];
        i = parent;
    }
    self->expiry[i] = item;
    return 0;
}

/* Remove the heap's top into *top (owned references); -1 on error. */
static int expiry_pop(Reorder *self, Expiry *top) {
    *top = self->expiry[0];
    Expiry last = self->expiry[--self->expiries];
    Py_ssize_t i = 0, n = self->expiries;
    if (n == 0) return 0;
    for (;;) { /* sift the last item down from the root */
        Py_ssize_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n) {
            int right = key_less(self->expiry[child + 1].at, self->expiry[child + 1].id,
                                 self->expiry[child].at, self->expiry[child].id);
            if (right < 0) goto failed;
            child += right;
        }
        int down = key_less(self->expiry[child].at, self->expiry[child].id, last.at, last.id);
        if (down < 0) goto failed;
        if (!down) break;
        self->expiry[i] = self->expiry[child];
        i = child;
    }
    self->expiry[i] = last;
    return 0;
failed:
    self->expiry[i] = last;
    return -1;
}

/* _forget_before(): drop remembered ids older than cutoff; -1 on error. */
static int reorder_forget_before(Reorder *self, PyObject *cutoff) {
    while (self->expiries > 0) {
        int old = less(self->expiry[0].at, cutoff);
        if (old < 0) return -1;
        if (!old) break;
        Expiry top;
        if (expiry_pop(self, &top) < 0) return -1;
        int failed = PyDict_DelItem(self->recent_ids, top.id);
        Py_DECREF(top.at);
        Py_DECREF(top.id);
        if (failed < 0) return -1;
    }
    return 0;
}

static int pending_reserve(Reorder *self) {
    if (self->end < self->capacity) return 0;
    if (self->head > 0) { /* move the live entries to the front */
        memmove(self->pending, self->pending + self->head,
                (size_t)(self->end - self->head) * sizeof(PyObject *));
        self->end -= self->head, self->head = 0;
        if (self->end <= self->capacity / 2) return 0; /* room enough; else grow too */
    }
    Py_ssize_t capacity = self->capacity ? 2 * self->capacity : 4;
    PyObject **grown = PyMem_Realloc(self->pending, (size_t)capacity * sizeof(PyObject *));
    if (grown == NULL) return PyErr_NoMemory(), -1;
    self->pending = grown;
    self->capacity = capacity;
    return 0;
}

/* Insert the (occurred_at, event_id, payload) tuple item in order, after equal keys
 * (bisect.insort's right side); -1 on error. */
static int pending_insert(Reorder *self, PyObject *item) {
    if (pending_reserve(self) < 0) return -1;
    PyObject *at = PyTuple_GET_ITEM(item, 0), *id = PyTuple_GET_ITEM(item, 1);
    Py_ssize_t low = self->head, high = self->end;
    if (high > low) { /* in order, as most are: after the last, no search */
        PyObject *last = self->pending[high - 1];
        int before = key_less(at, id, PyTuple_GET_ITEM(last, 0), PyTuple_GET_ITEM(last, 1));
        if (before < 0) return -1;
        if (!before) low = high;
    }
    while (low < high) {
        Py_ssize_t middle = low + (high - low) / 2;
        PyObject *entry = self->pending[middle];
        int before = key_less(at, id, PyTuple_GET_ITEM(entry, 0), PyTuple_GET_ITEM(entry, 1));
        if (before < 0) return -1;
        if (before) high = middle; else low = middle + 1;
    }
    memmove(self->pending + low + 1, self->pending + low,
            (size_t)(self->end - low) * sizeof(PyObject *));
    self->pending[low] = Py_NewRef(item);
    self->end++;
    return 0;
}

static PyObject *reorder_offer(Reorder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "offer(occurred_at, event_id, payload, lateness, floor)");
        return NULL;
    }
    PyObject *at = args[0], *id = args[1], *payload = args[2], *lateness = args[3];
    PyObject *floor = args[4];
    int known = PyDict_Contains(self->recent_ids, id);
    if (known < 0) return NULL;
    if (known) return Py_NewRef(duplicate_text);
    PyObject *cutoff = reorder_cutoff_of(self, lateness, floor);
    if (cutoff == NULL) return NULL;
    if (cutoff != Py_None) {
        int late = less(at, cutoff);
        Py_DECREF(cutoff);
        if (late < 0) return NULL;
        if (late) return Py_NewRef(late_text);
    } else {
        Py_DECREF(cutoff);
    }
    if (self->frontier != Py_None) {
        int before = key_less(at, id, PyTuple_GET_ITEM(self->frontier, 0),
                              PyTuple_GET_ITEM(self->frontier, 1));
        if (before < 0) return NULL;
        if (before) return Py_NewRef(late_text);
    }
    if (self->watermark == Py_None) {
        Py_SETREF(self->watermark, Py_NewRef(at));
    } else {
        int newer = PyObject_RichCompareBool(at, self->watermark, Py_GT);
        if (newer < 0) return NULL;
        if (newer) Py_SETREF(self->watermark, Py_NewRef(at));
    }
    PyObject *item = PyTuple_Pack(3, at, id, payload);
    if (item == NULL) return NULL;
    int failed = pending_insert(self, item);
    Py_DECREF(item);
    if (failed < 0 || PyDict_SetItem(self->recent_ids, id, at) < 0 ||
        expiry_push(self, at, id) < 0)
        return NULL;
    return Py_NewRef(accepted_text);
}

static PyObject *reorder_release(Reorder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "release(lateness, floor)");
        return NULL;
    }
    PyObject *cutoff = reorder_cutoff_of(self, args[0], args[1]);
    if (cutoff == NULL) return NULL;
    if (cutoff == Py_None) {
        Py_DECREF(cutoff);
        return PyList_New(0);
    }
    PyObject *released = PyList_New(0);
    if (released == NULL) goto failed;
    while (self->head < self->end) {
        PyObject *oldest = self->pending[self->head];
        int due = PyObject_RichCompareBool(PyTuple_GET_ITEM(oldest, 0), cutoff, Py_LE);
        if (due < 0) goto failed;
        if (!due) break;
        if (PyList_Append(released, oldest) < 0) goto failed;
        self->pending[self->head++] = NULL;
        Py_DECREF(oldest);
    }
    if (self->head == self->end) self->head = self->end = 0;
    Py_ssize_t count = PyList_GET_SIZE(released);
    if (count > 0) {
        PyObject *last = PyList_GET_ITEM(released, count - 1);
        PyObject *frontier = PyTuple_Pack(2, PyTuple_GET_ITEM(last, 0), PyTuple_GET_ITEM(last, 1));
        if (frontier == NULL) goto failed;
        Py_SETREF(self->frontier, frontier);
    }
    if (self->expiries > 0) {
        int old = less(self->expiry[0].at, cutoff);
        if (old < 0 || (old && reorder_forget_before(self, cutoff) < 0)) goto failed;
    }
    Py_DECREF(cutoff);
    return released;
failed:
    Py_DECREF(cutoff);
    Py_XDECREF(released);
    return NULL;
}

static PyObject *reorder_due(Reorder *self, PyObject *unused) {
    PyObject *pending = self->head < self->end ? PyTuple_GET_ITEM(self->pending[self->head], 0)
                                               : NULL;
    if (self->expiries == 0) return Py_NewRef(pending ? pending : Py_None);
    PyObject *after = PyNumber_Add(self->expiry[0].at, one);
    if (after == NULL || pending == NULL) return after;
    int sooner = less(after, pending);
    if (sooner < 0) {
        Py_DECREF(after);
        return NULL;
    }
    if (sooner) return after;
    Py_DECREF(after);
    return Py_NewRef(pending);
}

static PyObject *reorder_forget(Reorder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "forget(lateness, floor)");
        return NULL;
    }
    PyObject *cutoff = reorder_cutoff_of(self, args[0], args[1]);
    if (cutoff == NULL) return NULL;
    int failed = cutoff != Py_None && reorder_forget_before(self, cutoff) < 0;
    Py_DECREF(cutoff);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

static PyObject *reorder_cutoff(Reorder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "cutoff(lateness, floor)");
        return NULL;
    }
    return reorder_cutoff_of(self, args[0], args[1]);
}

static PyObject *reorder_oldest(Reorder *self, PyObject *unused) {
    if (self->head == self->end) Py_RETURN_NONE;
    return Py_NewRef(PyTuple_GET_ITEM(self->pending[self->head], 0));
}

static PyObject *reorder_to_state(Reorder *self, PyObject *unused) {
    PyObject *pending = PyList_New(self->end - self->head), *frontier = NULL, *ids = NULL;
    if (pending == NULL) return NULL;
    for (Py_ssize_t i = self->head; i < self->end; i++) {
        PyObject *entry = PySequence_List(self->pending[i]);
        if (entry == NULL) goto failed;
        PyList_SET_ITEM(pending, i - self->head, entry);
    }
    frontier = self->frontier == Py_None ? Py_NewRef(Py_None) : PySequence_List(self->frontier);
    ids = PyDict_Copy(self->recent_ids);
    if (frontier == NULL || ids == NULL) goto failed;
    PyObject *state = Py_BuildValue("{sOsOsOsO}", "watermark", self->watermark, "frontier",
                                    frontier, "pending", pending, "recent_ids", ids);
    Py_DECREF(pending), Py_DECREF(frontier), Py_DECREF(ids);
    return state;
failed:
    Py_XDECREF(pending), Py_XDECREF(frontier), Py_XDECREF(ids);
    return NULL;
}

static PyObject *reorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if ((args != NULL && PyTuple_GET_SIZE(args) != 0) ||
        (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "ReorderBuffer() takes no arguments");
        return NULL;
    }
    Reorder *self = (Reorder *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->watermark = Py_NewRef(Py_None);
    self->frontier = Py_NewRef(Py_None);
    self->recent_ids = PyDict_New();
    if (self->recent_ids == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* _load(watermark, frontier, pending, recent_ids): a new buffer's state, as from_state()
 * (event_time.py) works it out: frontier a tuple or None, pending a list of tuples in
 * order, recent_ids a dict (kept); the heap is rebuilt from the ids. */
static PyObject *reorder_load(Reorder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 4 || !PyList_CheckExact(args[2]) || !PyDict_CheckExact(args[3]) ||
        (args[1] != Py_None && !(PyTuple_CheckExact(args[1]) && PyTuple_GET_SIZE(args[1]) == 2))) {
        PyErr_SetString(PyExc_TypeError, "_load(watermark, frontier, pending, recent_ids)");
        return NULL;
    }
    if (self->end > self->head || self->expiries > 0 || PyDict_GET_SIZE(self->recent_ids)) {
        PyErr_SetString(PyExc_ValueError, "_load() takes a new buffer");
        return NULL;
    }
    PyObject *pending = args[2], *ids = args[3];
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pending); i++) {
        PyObject *item = PyList_GET_ITEM(pending, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 3) {
            PyErr_SetString(PyExc_TypeError, "_load(): pending entries are 3-tuples");
            return NULL;
        }
        if (pending_reserve(self) < 0) return NULL;
        self->pending[self->end++] = Py_NewRef(item);
    }
    Py_SETREF(self->watermark, Py_NewRef(args[0]));
    Py_SETREF(self->frontier, Py_NewRef(args[1]));
    Py_SETREF(self->recent_ids, Py_NewRef(ids));
    Py_ssize_t position = 0;
    PyObject *id, *at;
    while (PyDict_Next(ids, &position, &id, &at))
        if (expiry_push(self, at, id) < 0) return NULL;
    Py_RETURN_NONE;
}

static int reorder_traverse(Reorder *self, visitproc visit, void *arg) {
    Py_VISIT(self->watermark);
    Py_VISIT(self->frontier);
    Py_VISIT(self->recent_ids);
    for (Py_ssize_t i = self->head; i < self->end; i++) Py_VISIT(self->pending[i]);
    for (Py_ssize_t i = 0; i < self->expiries; i++) {
        Py_VISIT(self->expiry[i].at);
        Py_VISIT(self->expiry[i].id);
    }
    return 0;
}

static int reorder_clear(Reorder *self) {
    Py_CLEAR(self->watermark);
    Py_CLEAR(self->frontier);
    Py_CLEAR(self->recent_ids);
    for (Py_ssize_t i = self->head; i < self->end; i++) Py_CLEAR(self->pending[i]);
    self->head = self->end = 0;
    for (Py_ssize_t i = 0; i < self->expiries; i++) {
        Py_CLEAR(self->expiry[i].at);
        Py_CLEAR(self->expiry[i].id);
    }
    self->expiries = 0;
    return 0;
}

static void reorder_dealloc(Reorder *self) {
    PyObject_GC_UnTrack(self);
    reorder_clear(self);
    PyMem_Free(self->pending);
    PyMem_Free(self->expiry);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *reorder_get_watermark(Reorder *self, void *unused) {
    return Py_NewRef(self->watermark ? self->watermark : Py_None);
}

static PyObject *reorder_get_frontier(Reorder *self, void *unused) {
    return Py_NewRef(self->frontier ? self->frontier : Py_None);
}

static PyObject *reorder_get_recent_ids(Reorder *self, void *unused) {
    return Py_NewRef(self->recent_ids ? self->recent_ids : Py_None);
}

static PyGetSetDef reorder_getset[] = {
    {"watermark", (getter)reorder_get_watermark, NULL, "the newest event time offered", NULL},
    {"frontier", (getter)reorder_get_frontier, NULL, "the newest key released", NULL},
    {"recent_ids", (getter)reorder_get_recent_ids, NULL, "event_id -> occurred_at", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef reorder_methods[] = {
    {"offer", (PyCFunction)(void (*)(void))reorder_offer, METH_FASTCALL, NULL},
    {"release", (PyCFunction)(void (*)(void))reorder_release, METH_FASTCALL, NULL},
    {"forget", (PyCFunction)(void (*)(void))reorder_forget, METH_FASTCALL, NULL},
    {"cutoff", (PyCFunction)(void (*)(void))reorder_cutoff, METH_FASTCALL, NULL},
    {"due", (PyCFunction)reorder_due, METH_NOARGS, NULL},
    {"oldest", (PyCFunction)reorder_oldest, METH_NOARGS, NULL},
    {"to_state", (PyCFunction)reorder_to_state, METH_NOARGS, NULL},
    {"_load", (PyCFunction)(void (*)(void))reorder_load, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ReorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.ReorderBuffer",
    .tp_doc = PyDoc_STR("stream/detection/event_time.py's ReorderBuffer in C"),
    .tp_basicsize = sizeof(Reorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = reorder_new,
    .tp_dealloc = (destructor)reorder_dealloc,
    .tp_traverse = (traverseproc)reorder_traverse,
    .tp_clear = (inquiry)reorder_clear,
    .tp_methods = reorder_methods,
    .tp_getset = reorder_getset,
};

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"leaf_v1", (PyCFunction)(void (*)(void))leaf_v1, METH_FASTCALL,
     PyDoc_STR("leaf_v1(event, layout, magic) -> bytes | None: the version-1 canonical leaf")},
    {"chained_body", (PyCFunction)(void (*)(void))chained_body, METH_FASTCALL,
     PyDoc_STR("chained_body(value, header, link, partition, offset, epoch, index) -> "
               "bytes | None: a sequenced event's chained record body")},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "authtrail._speedups",
    .m_doc = PyDoc_STR("The worker's per-event decode and canonical leaf in C."),
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&FlatReaderType) < 0 || PyType_Ready(&FlatWriterType) < 0 ||
        PyType_Ready(&ReorderType) < 0)
        return NULL;
    /* event_time.py's outcomes (equal strings: they are counted by value) */
    if ((accepted_text = PyUnicode_InternFromString("accepted")) == NULL ||
        (late_text = PyUnicode_InternFromString("late")) == NULL ||
        (duplicate_text = PyUnicode_InternFromString("duplicate")) == NULL ||
        (one = PyLong_FromLong(1)) == NULL)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "FlatReader", (PyObject *)&FlatReaderType) < 0 ||
        PyModule_AddObjectRef(module, "FlatWriter", (PyObject *)&FlatWriterType) < 0 ||
        PyModule_AddObjectRef(module, "ReorderBuffer", (PyObject *)&ReorderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
