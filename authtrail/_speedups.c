/* authtrail._speedups: the worker's per-event decode, leaf, chained body, the
 * detectors' reorder buffer and the lockout and spraying detectors' hot paths in C
 * (docs/PERFORMANCE.md).
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
 *   LockoutCore(policy_for, lateness, tenants, locked, unlocked, user_key, by_time)
 *       stream/detection/lockout.py's LockoutDetector.observe_identified and advance over
 *       LockoutTenant and LockoutAccount (its _Tenant and _Account in C structs, whose
 *       fields the Python side reads and sets for state and prune); the other arguments
 *       are the Python functions it calls for the rare parts (a decision, a user key that
 *       is no plain user_id, a sort by time). Times are int64 (ValueError beyond).
 *       policy_for is called per event, unless it is a PolicyLookup(overrides, default):
 *       lockout_policy.py's PolicySet lookup, whose dict the core then reads itself (so
 *       does SprayCore).
 *       NativeLockoutDetector wraps it; tests/unit/test_lockout.py and
 *       test_lockout_native.py compare it with the Python detector.
 *
 *   SprayCore(policy_for, lateness, addresses, floors, counters, decision, keyed_identity,
 *             user_key, by_time)
 *       stream/detection/spray.py's SprayDetector.observe_identified and advance over the
 *       detector's own dicts, whose addresses are SprayAddress (its _Address in a C
 *       struct); the tenants' due and empty heaps are the core's. NativeSprayDetector
 *       wraps it; tests/unit/test_spray.py and test_spray_native.py compare it with the
 *       Python detector.
 *
 *   UsualPass(reader, admission, header, magic, mark, offer).run(...)
 *       stream/worker/sequencing.py's per-event steps for the usual events of one
 *       envelope, or of a run of bare messages (stream/worker/usual_pass.py says which);
 *       it stops before any event a step leaves to Python. tests/unit/test_usual_pass.py
 *       compares every publish with the worker handling one event at a time.
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
    KIND_BOOLEAN = 5, KIND_BYTES = 6, KIND_FIXED = 7, KIND_RECORD = 8, KIND_BYTES_ARRAY = 9
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

/* The item count of a map's or array's next block (0: the end); unusual for a block with
 * its byte size (a negative count). */
static int read_block(Cursor *c, uint64_t *count) {
    if (read_varint(c, count) < 0 || (*count & 1)) return -1;
    *count >>= 1;
    return 0;
}

static int read_map(Cursor *c, PyObject **out) {
    PyObject *entries = PyDict_New();
    if (entries == NULL) return -2;
    for (;;) {
        uint64_t count;
        if (read_block(c, &count) < 0) goto unusual;
        if (count == 0) break;
        for (; count > 0; count--) {
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

/* An array of bytes (the event envelope's events): blocks of items, ending with a count
 * of 0, as read_map() reads a map. */
static int read_bytes_array(Cursor *c, PyObject **out) {
    PyObject *items = PyList_New(0);
    if (items == NULL) return -2;
    for (;;) {
        uint64_t count;
        if (read_block(c, &count) < 0) goto unusual;
        if (count == 0) break;
        for (; count > 0; count--) {
            PyObject *item;
            int status = read_sized(c, &item, 0);
            if (status < 0) {
                Py_DECREF(items);
                return status;
            }
            status = PyList_Append(items, item);
            Py_DECREF(item);
            if (status < 0) {
                Py_DECREF(items);
                return -2;
            }
        }
    }
    *out = items;
    return 0;
unusual:
    Py_DECREF(items);
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
    case KIND_BYTES_ARRAY:
        return read_bytes_array(c, out);
    default:
        return read_map(c, out);
    }
}

/* The record at the cursor, its fields in schema order; the cursor stops after it. */
static int read_record(const FlatReader *reader, Cursor *c, PyObject **out) {
    /* Sized for every field at once: an event's 31 would resize an empty dict three times. */
    PyObject *record = _PyDict_NewPresized(reader->count);
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
 * 7 fixed, 8 record, 9 array of bytes; ``extra`` the symbols (a tuple of str) of an enum,
 * the size (int) of a fixed, the FlatReader of a record, else None. */
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
        if (kind < KIND_LONG || kind > KIND_BYTES_ARRAY) {
            PyErr_Format(PyExc_ValueError, "field kind %d is not 0..9", kind);
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
        if ((kind == KIND_MAP || kind == KIND_RECORD || kind == KIND_BYTES_ARRAY) && optional) {
            PyErr_SetString(PyExc_ValueError, "an optional map, record or array is not read here");
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

/* number in decimal, as "%lld" writes it (snprintf took ~0.2 µs an event); its length */
static int decimal(long long number, char digits[24]) {
    char reversed[24];
    int size = 0, length = 0;
    /* from the unsigned magnitude, so LLONG_MIN has no positive counterpart to overflow */
    unsigned long long rest = number < 0 ? 0ULL - (unsigned long long)number
                                         : (unsigned long long)number;
    do {
        reversed[size++] = (char)('0' + rest % 10);
        rest /= 10;
    } while (rest != 0);
    if (number < 0) digits[length++] = '-';
    while (size > 0) digits[length++] = reversed[--size];
    return length;
}

/* The leaf of layout's fields whose values are values[i] (borrowed; NULL: missing); None
 * for anything leaf_v1 leaves to Python. */
static PyObject *leaf_of(PyObject *layout, PyObject *const *values, PyObject *magic) {
    Out out = {PyMem_Malloc(512), 0, 512};
    if (out.data == NULL) return PyErr_NoMemory();
    int status = out_bytes(&out, PyBytes_AS_STRING(magic), PyBytes_GET_SIZE(magic));
    Py_ssize_t fields = PyTuple_GET_SIZE(layout);
    for (Py_ssize_t i = 0; i < fields && status == 0; i++) {
        PyObject *entry = PyTuple_GET_ITEM(layout, i);
        PyObject *string_prefix = PyTuple_GET_ITEM(entry, 1);
        PyObject *integer_prefix = PyTuple_GET_ITEM(entry, 2);
        PyObject *value = values[i];
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
                int size = decimal(number, digits);
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

/* Whether layout is a tuple of (name, string prefix, integer prefix) entries leaf_of reads */
static int layout_usable(PyObject *layout) {
    if (!PyTuple_CheckExact(layout)) return 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(layout); i++) {
        PyObject *entry = PyTuple_GET_ITEM(layout, i);
        if (!PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 3 ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 1)) ||
            !PyBytes_CheckExact(PyTuple_GET_ITEM(entry, 2)) ||
            PyBytes_GET_SIZE(PyTuple_GET_ITEM(entry, 1)) < 1)
            return 0;
    }
    return 1;
}

#define MAX_LEAF_FIELDS 256

static PyObject *leaf_v1(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyTuple_CheckExact(args[1]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "leaf_v1(event, layout: tuple, magic: bytes)");
        return NULL;
    }
    PyObject *event = args[0], *layout = args[1], *magic = args[2];
    Py_ssize_t fields = PyTuple_GET_SIZE(layout);
    if (!PyDict_CheckExact(event) || fields > MAX_LEAF_FIELDS || !layout_usable(layout))
        Py_RETURN_NONE;
    PyObject *values[MAX_LEAF_FIELDS];
    for (Py_ssize_t i = 0; i < fields; i++) {
        values[i] = PyDict_GetItemWithError(event, PyTuple_GET_ITEM(PyTuple_GET_ITEM(layout, i), 0));
        if (values[i] == NULL) break; /* missing, or an error: leaf_of says which */
    }
    return leaf_of(layout, values, magic);
}

/* The layout remember_layout() was last given: the keys of an event in its dict's order
 * (the decoder's, the same str objects each time), and for each layout entry the position
 * of its key there. */
static PyObject *known_keys, *known_layout;
static Py_ssize_t known_position[MAX_LEAF_FIELDS];

/* remember_layout(keys, layout): canonical.py's _layout(keys) is layout */
static PyObject *remember_layout(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyTuple_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "remember_layout(keys: tuple, layout: tuple)");
        return NULL;
    }
    PyObject *keys = args[0], *layout = args[1];
    Py_ssize_t count = PyTuple_GET_SIZE(keys);
    Py_CLEAR(known_keys); /* forgotten unless the new one is whole */
    Py_CLEAR(known_layout);
    if (count > MAX_LEAF_FIELDS || !layout_usable(layout) || PyTuple_GET_SIZE(layout) != count)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *name = PyTuple_GET_ITEM(PyTuple_GET_ITEM(layout, i), 0);
        Py_ssize_t at = 0;
        while (at < count && PyTuple_GET_ITEM(keys, at) != name) at++;
        /* a layout cached for equal keys that are other objects: found by equality */
        for (Py_ssize_t other = 0; at == count && other < count; other++) {
            int equal = PyObject_RichCompareBool(PyTuple_GET_ITEM(keys, other), name, Py_EQ);
            if (equal < 0) return NULL;
            if (equal) at = other;
        }
        if (at == count) Py_RETURN_NONE; /* not this layout's keys: not remembered */
        known_position[i] = at;
    }
    known_keys = Py_NewRef(keys), known_layout = Py_NewRef(layout);
    Py_RETURN_NONE;
}

/* leaf_known(event, magic, mark): leaf_v1 of the remembered layout, when event is an exact
 * dict holding exactly the remembered keys (the same objects, in the same order), and its
 * leaf does not contain mark (the sealed prefix, which canonical.py sorts out); else None. */
static PyObject *leaf_known(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyBytes_CheckExact(args[1]) || !PyBytes_CheckExact(args[2])) {
        PyErr_SetString(PyExc_TypeError, "leaf_known(event, magic: bytes, mark: bytes)");
        return NULL;
    }
    PyObject *event = args[0];
    if (known_keys == NULL || !PyDict_CheckExact(event) ||
        PyDict_GET_SIZE(event) != PyTuple_GET_SIZE(known_keys))
        Py_RETURN_NONE;
    PyObject *in_order[MAX_LEAF_FIELDS], *values[MAX_LEAF_FIELDS], *key, *value;
    Py_ssize_t position = 0, count = 0;
    while (PyDict_Next(event, &position, &key, &value)) {
        if (key != PyTuple_GET_ITEM(known_keys, count)) Py_RETURN_NONE;
        in_order[count++] = value;
    }
    for (Py_ssize_t i = 0; i < count; i++) values[i] = in_order[known_position[i]];
    PyObject *leaf = leaf_of(known_layout, values, args[1]);
    if (leaf == NULL || leaf == Py_None) return leaf;
    const char *mark = PyBytes_AS_STRING(args[2]);
    Py_ssize_t mark_size = PyBytes_GET_SIZE(args[2]);
    if (mark_size > 0 && memmem(PyBytes_AS_STRING(leaf), (size_t)PyBytes_GET_SIZE(leaf), mark,
                                (size_t)mark_size) != NULL)
        Py_SETREF(leaf, Py_NewRef(Py_None));
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

/* bytes_array(items): an Avro array of bytes as a codec writes it (the items in one block,
 * then the zero count), or None unless items is a list of exact bytes. The chained batch's
 * records, once per batch instead of a Python step per record (~0.6 µs a record). */
static PyObject *bytes_array(PyObject *module, PyObject *items) {
    if (!PyList_CheckExact(items)) Py_RETURN_NONE;
    Py_ssize_t count = PyList_GET_SIZE(items), total = 21;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyBytes_CheckExact(item)) Py_RETURN_NONE;
        total += PyBytes_GET_SIZE(item) + 10;
    }
    Out out = {PyMem_Malloc((size_t)total), 0, total};
    if (out.data == NULL) return PyErr_NoMemory();
    int failed = count > 0 && out_varint(&out, (uint64_t)count << 1) < 0;
    for (Py_ssize_t i = 0; i < count && !failed; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        failed = out_avro_bytes(&out, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item)) < 0;
    }
    static const char zero_count = 0;
    if (!failed) failed = out_bytes(&out, &zero_count, 1) < 0;
    PyObject *array = failed ? NULL : PyBytes_FromStringAndSize(out.data, out.size);
    PyMem_Free(out.data);
    return array;
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

/* -1, 0 or 1 as a is below, equal to or above b when both are exact ints within 64 bits
 * (event times always are: the worker admits no other), else 2: compare as Python does. */
static int int64_order(PyObject *a, PyObject *b) {
    if (!PyLong_CheckExact(a) || !PyLong_CheckExact(b)) return 2;
    int overflow_a = 0, overflow_b = 0;
    long long x = PyLong_AsLongLongAndOverflow(a, &overflow_a);
    long long y = PyLong_AsLongLongAndOverflow(b, &overflow_b);
    if (overflow_a || overflow_b) return 2; /* (no error is set for an exact int) */
    return (x > y) - (x < y);
}

/* a op b as Python says (op Py_LT, Py_LE or Py_GT); -1 with an error set. */
static int compare(PyObject *a, PyObject *b, int op) {
    int order = int64_order(a, b);
    if (order == 2) return PyObject_RichCompareBool(a, b, op);
    return op == Py_LT ? order < 0 : op == Py_LE ? order <= 0 : order > 0;
}

/* a < b as Python says; -1 with an error set. */
static int less(PyObject *a, PyObject *b) { return compare(a, b, Py_LT); }

/* (a_at, a_id) < (b_at, b_id) as tuples compare; -1 on error. */
static int key_less(PyObject *a_at, PyObject *a_id, PyObject *b_at, PyObject *b_id) {
    int order = int64_order(a_at, b_at);
    if (order != 2) return order == 0 ? less(a_id, b_id) : order < 0;
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
            int later = compare(floor, mark, Py_GT);
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
        int newer = compare(at, self->watermark, Py_GT);
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
        int due = compare(PyTuple_GET_ITEM(oldest, 0), cutoff, Py_LE);
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

/* ------------------------------------------------------------------ lockout core */

/* stream/detection/lockout.py's LockoutDetector hot paths (observe_identified, advance)
 * over accounts and tenants held in C structs; that file has the semantics and the
 * reference implementation, NativeLockoutDetector there wraps this one. Event times are
 * int64 microseconds here (the worker admits nothing else: admission.py bounds
 * occurred_at); a time or a policy product beyond int64 raises ValueError. Each
 * account's events wait in the C ReorderBuffer above, with the same dict payloads. The
 * tenant's indexes (lockout.py's _Tenant: buffered, scheduled, locked) live in the
 * accounts, its two heaps here, compared by time only: every pop of them is followed by
 * a set, a sort or a check that makes the order of equal times irrelevant. */

typedef struct {
    int64_t at;
    PyObject *key;
} Timed;

typedef struct {
    Timed *items;
    Py_ssize_t size, capacity;
} TimedHeap;

static int timed_push(TimedHeap *heap, int64_t at, PyObject *key) {
    if (heap->size == heap->capacity) {
        Py_ssize_t capacity = heap->capacity ? 2 * heap->capacity : 8;
        Timed *grown = PyMem_Realloc(heap->items, (size_t)capacity * sizeof(Timed));
        if (grown == NULL) return PyErr_NoMemory(), -1;
        heap->items = grown;
        heap->capacity = capacity;
    }
    Py_ssize_t i = heap->size++;
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (heap->items[parent].at <= at) break;
        heap->items[i] = heap->items[parent];
        i = parent;
    }
    heap->items[i] = (Timed){at, Py_NewRef(key)};
    return 0;
}

/* The top, removed; its key is the caller's reference. */
static Timed timed_pop(TimedHeap *heap) {
    Timed top = heap->items[0], last = heap->items[--heap->size];
    Py_ssize_t i = 0, n = heap->size;
    if (n > 0) {
        for (;;) {
            Py_ssize_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && heap->items[child + 1].at < heap->items[child].at) child++;
            if (heap->items[child].at >= last.at) break;
            heap->items[i] = heap->items[child];
            i = child;
        }
        heap->items[i] = last;
    }
    return top;
}

static void timed_clear(TimedHeap *heap) {
    for (Py_ssize_t i = 0; i < heap->size; i++) Py_CLEAR(heap->items[i].key);
    heap->size = 0;
}

static void timed_free(TimedHeap *heap) {
    timed_clear(heap);
    PyMem_Free(heap->items);
    heap->items = NULL;
    heap->capacity = 0;
}

typedef struct {
    PyObject_HEAD
    PyObject *tenant_id, *key;
    Reorder *order;
    int64_t failures, temporary_lockouts, last_failure, window_start, locked_until;
    char has_last_failure, has_window_start, has_locked_until, unlock_pending, permanent;
    PyObject *lock_trigger, *user_id, *user_name, *client_ip; /* each str or None */
    /* the tenant's indexes of this account (lockout.py's _Tenant) */
    char buffered, has_scheduled, has_locked;
    int64_t scheduled, locked;
} Account;

typedef struct {
    PyObject_HEAD
    PyObject *accounts; /* dict: key -> Account */
    PyObject *counters; /* dict: outcome -> int */
    int64_t clock, floor;
    char has_clock, has_floor;
    TimedHeap due, expiries;
} Tenant;

/* One LockoutPolicy's fields, read once per policy object (they are frozen). */
typedef struct {
    char enabled, permanent_lockout, multiple, count_mfa_failures, case_insensitive, only_permanent;
    int64_t max_temporary_lockouts, max_login_failures, wait_increment_seconds,
        max_failure_wait_seconds, quick_login_check_milliseconds,
        minimum_quick_login_wait_seconds, failure_reset_time_seconds;
} Policy;

typedef struct {
    PyObject_HEAD
    PyObject *policy_for, *tenants, *lateness; /* tenants: dict tenant_id -> Tenant */
    PyObject *locked_hook, *unlocked_hook, *user_key_hook, *by_time_hook;
    int64_t lateness_us;
    PyObject *policy; /* the last policy seen, parsed into parsed */
    Policy parsed;
} LockoutCore;

static PyTypeObject AccountType, TenantType, LockoutCoreType;
static PyObject *kind_failure, *kind_success, *kind_source_unlock, *irrelevant_text,
    *failure_while_locked_text, *success_while_locked_text, *quick_login_text,
    *max_login_failures_text, *max_temporary_lockouts_text;
static PyObject *s_kind, *s_user_id, *s_user_name, *s_client_ip, *s_event_type, *s_outcome,
    *s_id_prefix;

/* an int64 as a Python int, or None when absent */
static PyObject *optional_time(char has, int64_t value) {
    if (!has) Py_RETURN_NONE;
    return PyLong_FromLongLong(value);
}

static int as_time(PyObject *value, int64_t *out) {
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected an int time, got %R", value);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow) {
        PyErr_SetString(PyExc_ValueError, "a time beyond 64 bits");
        return -1;
    }
    *out = v;
    return 0;
}

static int add_checked(int64_t a, int64_t b, int64_t *out) {
    if (__builtin_add_overflow(a, b, out)) {
        PyErr_SetString(PyExc_ValueError, "an event time beyond 64 bits");
        return -1;
    }
    return 0;
}

static int sub_checked(int64_t a, int64_t b, int64_t *out) {
    if (__builtin_sub_overflow(a, b, out)) {
        PyErr_SetString(PyExc_ValueError, "an event time beyond 64 bits");
        return -1;
    }
    return 0;
}

static int mul_checked(int64_t a, int64_t b, int64_t *out) {
    if (__builtin_mul_overflow(a, b, out)) {
        PyErr_SetString(PyExc_ValueError, "a policy time beyond 64 bits");
        return -1;
    }
    return 0;
}

/* event.get(name) as a new reference (None when absent); NULL on error. */
static PyObject *event_get(PyObject *event, PyObject *name) {
    if (PyDict_CheckExact(event)) {
        PyObject *value = PyDict_GetItemWithError(event, name);
        if (value == NULL) {
            if (PyErr_Occurred()) return NULL;
            Py_RETURN_NONE;
        }
        return Py_NewRef(value);
    }
    return PyObject_CallMethod(event, "get", "O", name);
}

static int is_text(PyObject *value, const char *text) {
    return PyUnicode_Check(value) && PyUnicode_CompareWithASCIIString(value, text) == 0;
}

static int count(PyObject *counters, PyObject *outcome) {
    PyObject *now = PyDict_GetItemWithError(counters, outcome);
    if (now == NULL && PyErr_Occurred()) return -1;
    PyObject *next = now == NULL ? PyLong_FromLong(1) : PyNumber_Add(now, one);
    if (next == NULL) return -1;
    int failed = PyDict_SetItem(counters, outcome, next);
    Py_DECREF(next);
    return failed;
}

/* ---- policy */

static int policy_int(PyObject *policy, const char *name, int64_t *out) {
    PyObject *value = PyObject_GetAttrString(policy, name);
    if (value == NULL) return -1;
    long long v = PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = v;
    return 0;
}

static int policy_flag(PyObject *policy, const char *name, char *out) {
    PyObject *value = PyObject_GetAttrString(policy, name);
    if (value == NULL) return -1;
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    if (truth < 0) return -1;
    *out = (char)truth;
    return 0;
}

/* ---- policy lookup */

/* PolicyLookup(overrides, default)(tenant_id): overrides.get(tenant_id, default), which is
 * what lockout_policy.py's PolicySet.lockout_for and spray_for return; the detectors ask
 * it on every event, and through this type the cores read the dict without a call. */
typedef struct {
    PyObject_HEAD
    PyObject *overrides; /* an exact dict, read on every call: changes apply at once */
    PyObject *fallback;
} PolicyLookup;

static PyTypeObject PolicyLookupType;

static PyObject *lookup_get(PolicyLookup *self, PyObject *tenant_id) {
    PyObject *policy = PyDict_GetItemWithError(self->overrides, tenant_id);
    if (policy == NULL && PyErr_Occurred()) return NULL;
    return Py_NewRef(policy != NULL ? policy : self->fallback);
}

/* policy_for(tenant_id): a new reference; NULL on error. */
static PyObject *policy_of(PyObject *policy_for, PyObject *tenant_id) {
    if (Py_TYPE(policy_for) == &PolicyLookupType)
        return lookup_get((PolicyLookup *)policy_for, tenant_id);
    return PyObject_CallOneArg(policy_for, tenant_id);
}

static PyObject *lookup_call(PolicyLookup *self, PyObject *args, PyObject *kwargs) {
    PyObject *tenant_id;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) ||
        !PyArg_ParseTuple(args, "O:PolicyLookup", &tenant_id)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "PolicyLookup(tenant_id)");
        return NULL;
    }
    return lookup_get(self, tenant_id);
}

static PyObject *lookup_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *overrides, *fallback;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) ||
        !PyArg_ParseTuple(args, "OO:PolicyLookup", &overrides, &fallback)) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "PolicyLookup(overrides, default)");
        return NULL;
    }
    if (!PyDict_CheckExact(overrides)) {
        PyErr_SetString(PyExc_TypeError, "PolicyLookup takes an exact dict");
        return NULL;
    }
    PolicyLookup *self = (PolicyLookup *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->overrides = Py_NewRef(overrides), self->fallback = Py_NewRef(fallback);
    return (PyObject *)self;
}

static int lookup_traverse(PolicyLookup *self, visitproc visit, void *arg) {
    Py_VISIT(self->overrides);
    Py_VISIT(self->fallback);
    return 0;
}

static int lookup_clear(PolicyLookup *self) {
    Py_CLEAR(self->overrides);
    Py_CLEAR(self->fallback);
    return 0;
}

static void lookup_dealloc(PolicyLookup *self) {
    PyObject_GC_UnTrack(self);
    lookup_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PolicyLookupType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.PolicyLookup",
    .tp_doc = PyDoc_STR("overrides.get(tenant_id, default), read by the detectors' cores"),
    .tp_basicsize = sizeof(PolicyLookup),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = lookup_new,
    .tp_call = (ternaryfunc)lookup_call,
    .tp_traverse = (traverseproc)lookup_traverse,
    .tp_clear = (inquiry)lookup_clear,
    .tp_dealloc = (destructor)lookup_dealloc,
};

/* policy_for(tenant_id), parsed (a borrowed view valid until the next call); NULL on error. */
static const Policy *core_policy(LockoutCore *self, PyObject *tenant_id) {
    PyObject *policy = policy_of(self->policy_for, tenant_id);
    if (policy == NULL) return NULL;
    if (policy == self->policy) {
        Py_DECREF(policy);
        return &self->parsed;
    }
    Policy p;
    PyObject *strategy = NULL, *mode = NULL;
    if (policy_flag(policy, "enabled", &p.enabled) < 0 ||
        policy_flag(policy, "permanent_lockout", &p.permanent_lockout) < 0 ||
        policy_flag(policy, "count_mfa_failures", &p.count_mfa_failures) < 0 ||
        policy_flag(policy, "case_insensitive_user_names", &p.case_insensitive) < 0 ||
        policy_int(policy, "max_temporary_lockouts", &p.max_temporary_lockouts) < 0 ||
        policy_int(policy, "max_login_failures", &p.max_login_failures) < 0 ||
        policy_int(policy, "wait_increment_seconds", &p.wait_increment_seconds) < 0 ||
        policy_int(policy, "max_failure_wait_seconds", &p.max_failure_wait_seconds) < 0 ||
        policy_int(policy, "quick_login_check_milliseconds",
                   &p.quick_login_check_milliseconds) < 0 ||
        policy_int(policy, "minimum_quick_login_wait_seconds",
                   &p.minimum_quick_login_wait_seconds) < 0 ||
        policy_int(policy, "failure_reset_time_seconds", &p.failure_reset_time_seconds) < 0 ||
        (strategy = PyObject_GetAttrString(policy, "strategy")) == NULL ||
        (mode = PyObject_GetAttrString(policy, "mode")) == NULL)
        goto failed;
    p.multiple = (char)is_text(strategy, "MULTIPLE");
    p.only_permanent = (char)is_text(mode, "permanent");
    if (p.max_login_failures < 1) {
        PyErr_SetString(PyExc_ValueError, "max_login_failures must be >= 1");
        goto failed;
    }
    Py_DECREF(strategy);
    Py_DECREF(mode);
    Py_XSETREF(self->policy, policy);
    self->parsed = p;
    return &self->parsed;
failed:
    Py_XDECREF(strategy);
    Py_XDECREF(mode);
    Py_DECREF(policy);
    return NULL;
}

/* ---- account */

static Account *account_new(PyObject *tenant_id, PyObject *key) {
    Account *account = PyObject_GC_New(Account, &AccountType);
    if (account == NULL) return NULL;
    account->tenant_id = Py_NewRef(tenant_id);
    account->key = Py_NewRef(key);
    account->order = (Reorder *)reorder_new(&ReorderType, NULL, NULL);
    account->failures = account->temporary_lockouts = 0;
    account->last_failure = account->window_start = account->locked_until = 0;
    account->has_last_failure = account->has_window_start = account->has_locked_until = 0;
    account->unlock_pending = account->permanent = 0;
    account->lock_trigger = Py_NewRef(Py_None);
    account->user_id = Py_NewRef(Py_None);
    account->user_name = Py_NewRef(Py_None);
    account->client_ip = Py_NewRef(Py_None);
    account->buffered = account->has_scheduled = account->has_locked = 0;
    account->scheduled = account->locked = 0;
    PyObject_GC_Track(account);
    if (account->order == NULL) {
        Py_DECREF(account);
        return NULL;
    }
    return account;
}

static int account_traverse(Account *self, visitproc visit, void *arg) {
    Py_VISIT(self->tenant_id);
    Py_VISIT(self->key);
    Py_VISIT(self->order);
    Py_VISIT(self->lock_trigger);
    Py_VISIT(self->user_id);
    Py_VISIT(self->user_name);
    Py_VISIT(self->client_ip);
    return 0;
}

static int account_clear(Account *self) {
    Py_CLEAR(self->tenant_id);
    Py_CLEAR(self->key);
    Py_CLEAR(self->order);
    Py_CLEAR(self->lock_trigger);
    Py_CLEAR(self->user_id);
    Py_CLEAR(self->user_name);
    Py_CLEAR(self->client_ip);
    return 0;
}

static void account_dealloc(Account *self) {
    PyObject_GC_UnTrack(self);
    account_clear(self);
    PyObject_GC_Del(self);
}

static void clear_failures(Account *a) {
    a->failures = a->temporary_lockouts = 0;
    a->has_last_failure = a->has_window_start = 0;
}

/* Append hook(account, ...)'s decision to decisions; -1 on error. */
static int decide(PyObject *decisions, PyObject *hook, Account *a, PyObject *first,
                  int64_t now) {
    PyObject *at = PyLong_FromLongLong(now);
    if (at == NULL) return -1;
    PyObject *decision = PyObject_CallFunctionObjArgs(hook, (PyObject *)a, first, at, NULL);
    Py_DECREF(at);
    if (decision == NULL) return -1;
    int failed = PyList_Append(decisions, decision);
    Py_DECREF(decision);
    return failed;
}

/* _Account.unlocked(): the end of the current lock (source_event_id None: by expiry). */
static int unlocked(PyObject *decisions, LockoutCore *core, Account *a, PyObject *source,
                    int64_t now) {
    a->unlock_pending = 0;
    return decide(decisions, core->unlocked_hook, a, source, now);
}

static int locked(PyObject *decisions, LockoutCore *core, Account *a, PyObject *reason,
                  int64_t now) {
    return decide(decisions, core->locked_hook, a, reason, now);
}

/* _Account.failed(): one counted failure; appends its lock decision, if any. */
static int failed_login(PyObject *decisions, LockoutCore *core, Account *a, int64_t now,
                        PyObject *event_id, PyObject *client_ip, const Policy *p) {
    int only_permanent = p->only_permanent, has_since = a->has_last_failure;
    int64_t since_last = 0, reset_after, wait = 0, quick_limit;
    if (has_since && sub_checked(now, a->last_failure, &since_last) < 0) return -1;
    if (mul_checked(p->failure_reset_time_seconds, 1000000, &reset_after) < 0 ||
        mul_checked(p->quick_login_check_milliseconds, 1000, &quick_limit) < 0)
        return -1;
    if (!only_permanent && has_since && since_last > reset_after) clear_failures(a);
    a->last_failure = now, a->has_last_failure = 1;
    a->failures += 1;
    int ip = PyObject_IsTrue(client_ip);
    if (ip < 0) return -1;
    if (ip) Py_SETREF(a->client_ip, Py_NewRef(client_ip));
    if (!a->has_window_start) a->window_start = now, a->has_window_start = 1;
    if (!only_permanent) { /* _strategy_wait(); beyond 64 bits it is capped below anyway */
        int64_t steps = p->multiple ? a->failures / p->max_login_failures
                                    : 1 + a->failures - p->max_login_failures;
        if (__builtin_mul_overflow(p->wait_increment_seconds, steps, &wait))
            wait = steps < 0 ? INT64_MIN : INT64_MAX;
    }
    int quick = wait <= 0 && has_since && since_last < quick_limit;
    if (quick) wait = p->minimum_quick_login_wait_seconds;
    PyObject *lock_reason = NULL;
    if (wait > 0) {
        if (!only_permanent && wait > p->max_failure_wait_seconds)
            wait = p->max_failure_wait_seconds;
        if (!quick) a->temporary_lockouts += 1;
        if (quick || !p->permanent_lockout ||
            a->temporary_lockouts <= p->max_temporary_lockouts) {
            int64_t span;
            if (mul_checked(wait, 1000000, &span) < 0 ||
                add_checked(now, span, &a->locked_until) < 0)
                return -1;
            a->has_locked_until = 1;
            Py_SETREF(a->lock_trigger, Py_NewRef(event_id));
            a->unlock_pending = 1;
            lock_reason = quick ? quick_login_text : max_login_failures_text;
        }
    }
    if (p->permanent_lockout &&
        (a->temporary_lockouts > p->max_temporary_lockouts ||
         (only_permanent && a->failures >= p->max_login_failures))) {
        /* A permanent lock supersedes a temporary one decided by the same failure. */
        a->permanent = 1, a->has_locked_until = 0, a->unlock_pending = 0;
        Py_SETREF(a->lock_trigger, Py_NewRef(event_id));
        lock_reason = only_permanent ? max_login_failures_text : max_temporary_lockouts_text;
    }
    /* Python builds the temporary lock's decision before a permanent one replaces it;
     * building only the last reads the same fields (the permanent one re-reads them). */
    return lock_reason == NULL ? 0 : locked(decisions, core, a, lock_reason, now);
}

/* _Account.apply(): one released event; counts what it must under counters. */
static int apply_event(PyObject *decisions, LockoutCore *core, Tenant *tenant, Account *a,
                       PyObject *item, const Policy *p) {
    PyObject *at = PyTuple_GET_ITEM(item, 0), *event_id = PyTuple_GET_ITEM(item, 1);
    PyObject *payload = PyTuple_GET_ITEM(item, 2);
    int64_t now;
    if (as_time(at, &now) < 0) return -1;
    PyObject *kind = PyObject_GetItem(payload, s_kind), *value;
    if (kind == NULL) return -1;
    int result = -1, truth;
    for (int field = 0; field < 2; field++) {
        value = PyObject_GetItem(payload, field ? s_user_name : s_user_id);
        if (value == NULL) goto done;
        truth = PyObject_IsTrue(value);
        if (truth < 0) {
            Py_DECREF(value);
            goto done;
        }
        if (truth) Py_SETREF(*(field ? &a->user_name : &a->user_id), value);
        else Py_DECREF(value);
    }
    if (a->unlock_pending && a->has_locked_until && a->locked_until <= now) /* expiry_due */
        if (unlocked(decisions, core, a, Py_None, now) < 0) goto done;
    int temporarily_locked = a->has_locked_until && now < a->locked_until;
    if (is_text(kind, "source_unlock")) {
        if (a->permanent || (temporarily_locked && a->unlock_pending))
            if (unlocked(decisions, core, a, event_id, now) < 0) goto done;
        clear_failures(a);
        a->permanent = 0, a->has_locked_until = 0, a->unlock_pending = 0;
        result = 0;
    } else if (a->permanent || temporarily_locked) {
        /* Keycloak refuses a disabled account before checking credentials. */
        PyObject *outcome = is_text(kind, "success") ? success_while_locked_text
                            : is_text(kind, "failure")
                                ? failure_while_locked_text
                                : PyUnicode_FromFormat("%S_while_locked", kind);
        if (outcome == NULL) goto done;
        result = count(tenant->counters, outcome);
        if (outcome != success_while_locked_text && outcome != failure_while_locked_text)
            Py_DECREF(outcome);
    } else if (is_text(kind, "success")) {
        clear_failures(a);
        result = 0;
    } else {
        PyObject *client_ip = PyObject_GetItem(payload, s_client_ip);
        if (client_ip == NULL) goto done;
        result = failed_login(decisions, core, a, now, event_id, client_ip, p);
        Py_DECREF(client_ip);
    }
done:
    Py_DECREF(kind);
    return result;
}

/* _Tenant.track(): index the account after a release or an offer. */
static int track(Tenant *tenant, Account *a) {
    Reorder *order = a->order;
    if (order->head < order->end) {
        a->buffered = 1;
        PyObject *due_value = reorder_due(order, NULL);
        if (due_value == NULL) return -1;
        int64_t due = 0;
        int truth = PyObject_IsTrue(due_value);
        int failed = truth < 0 || (truth && as_time(due_value, &due) < 0);
        Py_DECREF(due_value);
        if (failed) return -1;
        if (!a->has_scheduled || due < a->scheduled) {
            a->scheduled = due, a->has_scheduled = 1;
            if (timed_push(&tenant->due, due, a->key) < 0) return -1;
        }
    } else {
        a->buffered = 0;
    }
    if (a->unlock_pending) {
        int64_t until = a->has_locked_until ? a->locked_until : 0;
        if (!a->has_locked || a->locked != until) {
            a->locked = until, a->has_locked = 1;
            if (timed_push(&tenant->expiries, until, a->key) < 0) return -1;
        }
    } else {
        a->has_locked = 0;
    }
    return 0;
}

/* LockoutDetector._apply(): the released events (a list of tuples), then track. */
static int apply_released(PyObject *decisions, LockoutCore *core, Tenant *tenant, Account *a,
                          PyObject *released, const Policy *p) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(released); i++)
        if (apply_event(decisions, core, tenant, a, PyList_GET_ITEM(released, i), p) < 0)
            return -1;
    return track(tenant, a);
}

static PyObject *floor_object(Tenant *tenant) { return optional_time(tenant->has_floor, tenant->floor); }

/* value, a borrowed item of a dict the Python side fills too, as a type; NULL with
 * TypeError when it is another (a programming error, not a crash). */
static void *of_type(PyObject *value, PyTypeObject *type) {
    if (value != NULL && !Py_IS_TYPE(value, type)) {
        PyErr_Format(PyExc_TypeError, "expected %s, got %R", type->tp_name, value);
        return NULL;
    }
    return value;
}

/* accounts[key] (borrowed): NULL when absent, NULL with an error set when not an Account */
static Account *account_in(PyObject *accounts, PyObject *key) {
    PyObject *found = PyDict_GetItemWithError(accounts, key);
    return found == NULL ? NULL : of_type(found, &AccountType);
}

/* LockoutDetector._expire(): the temporary locks whose end the clock reached. */
static int expire(PyObject *decisions, LockoutCore *core, Tenant *tenant) {
    if (!tenant->has_clock || tenant->expiries.size == 0 ||
        tenant->expiries.items[0].at > tenant->clock)
        return 0;
    int64_t clock = tenant->clock;
    PyObject *due = PyList_New(0); /* (until, key) tuples */
    if (due == NULL) return -1;
    while (tenant->expiries.size > 0 && tenant->expiries.items[0].at <= clock) {
        Timed top = timed_pop(&tenant->expiries);
        Account *a = account_in(tenant->accounts, top.key);
        if (a == NULL && PyErr_Occurred()) goto failed_top;
        if (a == NULL || !a->has_locked || a->locked != top.at) { /* stale */
            Py_DECREF(top.key);
            continue;
        }
        a->has_locked = 0;
        Reorder *order = a->order;
        if (order->head < order->end) {
            int64_t oldest;
            if (as_time(PyTuple_GET_ITEM(order->pending[order->head], 0), &oldest) < 0)
                goto failed_top;
            if (oldest < top.at) { /* its own buffered event goes first */
                Py_DECREF(top.key);
                continue;
            }
        }
        PyObject *entry = Py_BuildValue("(LO)", (long long)top.at, top.key);
        Py_DECREF(top.key);
        if (entry == NULL || PyList_Append(due, entry) < 0) {
            Py_XDECREF(entry);
            goto failed;
        }
        Py_DECREF(entry);
        continue;
    failed_top:
        Py_DECREF(top.key);
        goto failed;
    }
    if (PyList_Sort(due) < 0) goto failed;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(due); i++) {
        PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(due, i), 1);
        Account *a = account_in(tenant->accounts, key);
        if (a == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, key);
            goto failed;
        }
        Py_INCREF(a); /* held across the Python decision */
        int failed = unlocked(decisions, core, a, Py_None, clock);
        Py_DECREF(a);
        if (failed < 0) goto failed;
    }
    Py_DECREF(due);
    return 0;
failed:
    Py_DECREF(due);
    return -1;
}

static Tenant *tenant_new_empty(void) {
    Tenant *tenant = PyObject_GC_New(Tenant, &TenantType);
    if (tenant == NULL) return NULL;
    tenant->accounts = PyDict_New();
    tenant->counters = PyDict_New();
    tenant->clock = tenant->floor = 0;
    tenant->has_clock = tenant->has_floor = 0;
    tenant->due = (TimedHeap){NULL, 0, 0};
    tenant->expiries = (TimedHeap){NULL, 0, 0};
    PyObject_GC_Track(tenant);
    if (tenant->accounts == NULL || tenant->counters == NULL) {
        Py_DECREF(tenant);
        return NULL;
    }
    return tenant;
}

/* The tenant of tenant_id, made if new (a borrowed reference); NULL on error. */
static Tenant *core_tenant(LockoutCore *self, PyObject *tenant_id) {
    PyObject *found = PyDict_GetItemWithError(self->tenants, tenant_id);
    if (found != NULL) return of_type(found, &TenantType);
    if (PyErr_Occurred()) return NULL;
    Tenant *tenant = tenant_new_empty();
    if (tenant == NULL) return NULL;
    int failed = PyDict_SetItem(self->tenants, tenant_id, (PyObject *)tenant);
    Py_DECREF(tenant);
    return failed < 0 ? NULL : tenant;
}

/* decisions oldest first (sorted by occurred_at, stable), a new reference */
static PyObject *by_time(LockoutCore *self, PyObject *decisions) {
    if (PyList_GET_SIZE(decisions) < 2) return decisions;
    PyObject *sorted = PyObject_CallOneArg(self->by_time_hook, decisions);
    Py_DECREF(decisions);
    return sorted;
}

/* _classify(): the kind an event gives its account, or NULL (a borrowed constant). */
static PyObject *classify(PyObject *event_type, PyObject *outcome, const Policy *p) {
    if (is_text(event_type, "LOGIN_FAILED") ||
        (is_text(event_type, "LOGIN") && is_text(outcome, "FAILURE")))
        return kind_failure;
    if (is_text(event_type, "MFA_FAILURE") && p->count_mfa_failures) return kind_failure;
    if (is_text(event_type, "LOGIN") && is_text(outcome, "SUCCESS")) return kind_success;
    if (is_text(event_type, "ACCOUNT_UNLOCKED") && !is_text(outcome, "FAILURE"))
        return kind_source_unlock;
    return NULL;
}

/* user_key(): "id:" + a non-empty str user_id here, anything else by the Python function. */
static PyObject *user_key_of(PyObject *event, int case_insensitive, PyObject *user_key) {
    PyObject *user_id = event_get(event, s_user_id);
    if (user_id == NULL) return NULL;
    if (PyUnicode_CheckExact(user_id) && PyUnicode_GET_LENGTH(user_id) > 0) {
        PyObject *key = PyUnicode_Concat(s_id_prefix, user_id);
        Py_DECREF(user_id);
        return key;
    }
    Py_DECREF(user_id);
    return PyObject_CallFunctionObjArgs(user_key, event, case_insensitive ? Py_True : Py_False,
                                        NULL);
}

static PyObject *core_observe_identified(LockoutCore *self, PyObject *const *args,
                                         Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "observe_identified(event, tenant_id, event_id, occurred_at)");
        return NULL;
    }
    PyObject *event = args[0], *tenant_id = args[1], *event_id = args[2], *at = args[3];
    int64_t occurred_at;
    if (as_time(at, &occurred_at) < 0) return NULL;
    const Policy *p = core_policy(self, tenant_id);
    if (p == NULL) return NULL;
    Tenant *tenant = core_tenant(self, tenant_id);
    if (tenant == NULL) return NULL;
    Py_INCREF(tenant);
    PyObject *decisions = PyList_New(0), *key = NULL, *payload = NULL, *released = NULL;
    Account *account = NULL;
    if (decisions == NULL) goto failed;
    if (!tenant->has_clock || occurred_at > tenant->clock)
        tenant->clock = occurred_at, tenant->has_clock = 1;
    PyObject *kind = NULL;
    if (p->enabled) {
        PyObject *event_type = event_get(event, s_event_type);
        if (event_type == NULL) goto failed;
        if (is_text(event_type, "LOGIN_FAILED") || is_text(event_type, "LOGIN") ||
            is_text(event_type, "MFA_FAILURE") || is_text(event_type, "ACCOUNT_UNLOCKED")) {
            PyObject *outcome = event_get(event, s_outcome);
            if (outcome == NULL) {
                Py_DECREF(event_type);
                goto failed;
            }
            kind = classify(event_type, outcome, p);
            Py_DECREF(outcome);
        }
        Py_DECREF(event_type);
    }
    if (kind != NULL) {
        key = user_key_of(event, p->case_insensitive, self->user_key_hook);
        if (key == NULL) goto failed;
    }
    if (kind == NULL || key == Py_None) {
        if (count(tenant->counters, irrelevant_text) < 0) goto failed;
    } else {
        Account *a = account_in(tenant->accounts, key);
        if (a == NULL) {
            if (PyErr_Occurred()) goto failed;
            a = account_new(tenant_id, key);
            if (a == NULL) goto failed;
            int stored = PyDict_SetItem(tenant->accounts, key, (PyObject *)a);
            Py_DECREF(a);
            if (stored < 0) goto failed;
        }
        account = (Account *)Py_NewRef(a); /* held across the Python decisions */
        PyObject *user_id = NULL, *user_name = NULL, *client_ip = NULL;
        if ((user_id = event_get(event, s_user_id)) == NULL ||
            (user_name = event_get(event, s_user_name)) == NULL ||
            (client_ip = event_get(event, s_client_ip)) == NULL) {
            Py_XDECREF(user_id), Py_XDECREF(user_name);
            goto failed;
        }
        payload = _PyDict_NewPresized(4);
        int built = payload != NULL && PyDict_SetItem(payload, s_kind, kind) == 0 &&
                    PyDict_SetItem(payload, s_user_id, user_id) == 0 &&
                    PyDict_SetItem(payload, s_user_name, user_name) == 0 &&
                    PyDict_SetItem(payload, s_client_ip, client_ip) == 0;
        Py_DECREF(user_id), Py_DECREF(user_name), Py_DECREF(client_ip);
        if (!built) goto failed;
        PyObject *floor = floor_object(tenant);
        if (floor == NULL) goto failed;
        PyObject *offer_args[5] = {at, event_id, payload, self->lateness, floor};
        PyObject *outcome = reorder_offer(a->order, offer_args, 5);
        if (outcome == NULL || count(tenant->counters, outcome) < 0) {
            Py_XDECREF(outcome);
            Py_DECREF(floor);
            goto failed;
        }
        Py_DECREF(outcome);
        PyObject *release_args[2] = {self->lateness, floor};
        released = reorder_release(a->order, release_args, 2);
        Py_DECREF(floor);
        if (released == NULL) goto failed;
        if (PyList_GET_SIZE(released) > 0 ? apply_released(decisions, self, tenant, a, released, p) < 0
                                          : track(tenant, a) < 0)
            goto failed;
    }
    if (tenant->expiries.size > 0 && tenant->expiries.items[0].at <= tenant->clock &&
        expire(decisions, self, tenant) < 0)
        goto failed;
    Py_XDECREF(key), Py_XDECREF(payload), Py_XDECREF(released), Py_XDECREF(account);
    Py_DECREF(tenant);
    return by_time(self, decisions);
failed:
    Py_XDECREF(decisions), Py_XDECREF(key), Py_XDECREF(payload), Py_XDECREF(released);
    Py_XDECREF(account);
    Py_DECREF(tenant);
    return NULL;
}

static PyObject *core_advance(LockoutCore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "advance(tenant_id, now)");
        return NULL;
    }
    PyObject *tenant_id = args[0];
    int64_t now, cutoff;
    if (as_time(args[1], &now) < 0) return NULL;
    Tenant *tenant = core_tenant(self, tenant_id);
    if (tenant == NULL) return NULL;
    Py_INCREF(tenant);
    PyObject *decisions = NULL, *visit = NULL, *floor = NULL;
    if (!tenant->has_floor || now > tenant->floor) tenant->floor = now, tenant->has_floor = 1;
    if (!tenant->has_clock || now > tenant->clock) tenant->clock = now, tenant->has_clock = 1;
    const Policy *p = core_policy(self, tenant_id);
    if (p == NULL || (decisions = PyList_New(0)) == NULL || (visit = PyList_New(0)) == NULL ||
        sub_checked(tenant->floor, self->lateness_us, &cutoff) < 0)
        goto failed;
    /* Only accounts whose due the cutoff reached can release anything (lockout.py). */
    while (tenant->due.size > 0 && tenant->due.items[0].at <= cutoff) {
        Timed top = timed_pop(&tenant->due);
        Account *a = account_in(tenant->accounts, top.key);
        if (a == NULL && PyErr_Occurred()) {
            Py_DECREF(top.key);
            goto failed;
        }
        int listed = 0;
        if (a != NULL) {
            if (a->has_scheduled && a->scheduled == top.at) a->has_scheduled = 0;
            /* visit & buffered, each key once: the flag marks it listed (cleared below) */
            if (a->buffered == 1) {
                a->buffered = 2;
                listed = PyList_Append(visit, top.key) < 0 ? -1 : 1;
            }
        }
        Py_DECREF(top.key);
        if (listed < 0) goto failed;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(visit); i++) /* listed: checked Accounts */
        ((Account *)PyDict_GetItem(tenant->accounts, PyList_GET_ITEM(visit, i)))->buffered = 1;
    if (PyList_Sort(visit) < 0 || (floor = floor_object(tenant)) == NULL) goto failed;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(visit); i++) {
        Account *a = account_in(tenant->accounts, PyList_GET_ITEM(visit, i));
        if (a == NULL) {
            if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, PyList_GET_ITEM(visit, i));
            goto failed;
        }
        Py_INCREF(a); /* held across the Python decisions */
        PyObject *release_args[2] = {self->lateness, floor};
        PyObject *released = reorder_release(a->order, release_args, 2);
        int failed = released == NULL ? -1 : apply_released(decisions, self, tenant, a, released, p);
        Py_XDECREF(released);
        Py_DECREF(a);
        if (failed < 0) goto failed;
    }
    if (expire(decisions, self, tenant) < 0) goto failed;
    Py_DECREF(visit), Py_DECREF(floor), Py_DECREF(tenant);
    if (PyList_GET_SIZE(decisions) < 2) return decisions;
    return by_time(self, decisions);
failed:
    Py_XDECREF(decisions), Py_XDECREF(visit), Py_XDECREF(floor);
    Py_DECREF(tenant);
    return NULL;
}

/* ---- the Python side of accounts and tenants (lockout.py's state code and prune) */

static PyObject *account_py_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *tenant_id, *key;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "LockoutAccount(tenant_id, key)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "UU:LockoutAccount", &tenant_id, &key)) return NULL;
    return (PyObject *)account_new(tenant_id, key);
}

#define ACCOUNT_TIME(name)                                                                   \
    static PyObject *account_get_##name(Account *self, void *unused) {                      \
        return optional_time(self->has_##name, self->name);                                  \
    }                                                                                        \
    static int account_set_##name(Account *self, PyObject *value, void *unused) {            \
        if (value == NULL || value == Py_None) {                                             \
            self->has_##name = 0;                                                            \
            return 0;                                                                        \
        }                                                                                    \
        if (as_time(value, &self->name) < 0) return -1;                                      \
        self->has_##name = 1;                                                                \
        return 0;                                                                            \
    }
ACCOUNT_TIME(last_failure)
ACCOUNT_TIME(window_start)
ACCOUNT_TIME(locked_until)

#define ACCOUNT_COUNT(name)                                                                  \
    static PyObject *account_get_##name(Account *self, void *unused) {                      \
        return PyLong_FromLongLong(self->name);                                              \
    }                                                                                        \
    static int account_set_##name(Account *self, PyObject *value, void *unused) {            \
        if (value == NULL) {                                                                 \
            PyErr_SetString(PyExc_AttributeError, "cannot delete " #name);                   \
            return -1;                                                                       \
        }                                                                                    \
        return as_time(value, &self->name);                                                  \
    }
ACCOUNT_COUNT(failures)
ACCOUNT_COUNT(temporary_lockouts)

#define ACCOUNT_FLAG(name)                                                                   \
    static PyObject *account_get_##name(Account *self, void *unused) {                      \
        return PyBool_FromLong(self->name);                                                  \
    }                                                                                        \
    static int account_set_##name(Account *self, PyObject *value, void *unused) {            \
        int truth = value == NULL ? 0 : PyObject_IsTrue(value);                              \
        if (truth < 0) return -1;                                                            \
        self->name = (char)truth;                                                            \
        return 0;                                                                            \
    }
ACCOUNT_FLAG(unlock_pending)
ACCOUNT_FLAG(permanent)

#define ACCOUNT_OBJECT(name)                                                                 \
    static PyObject *account_get_##name(Account *self, void *unused) {                      \
        return Py_NewRef(self->name);                                                        \
    }                                                                                        \
    static int account_set_##name(Account *self, PyObject *value, void *unused) {            \
        Py_XSETREF(self->name, Py_NewRef(value ? value : Py_None));                          \
        return 0;                                                                            \
    }
ACCOUNT_OBJECT(lock_trigger)
ACCOUNT_OBJECT(user_id)
ACCOUNT_OBJECT(user_name)
ACCOUNT_OBJECT(client_ip)

static PyObject *account_get_order(Account *self, void *unused) {
    return Py_NewRef((PyObject *)self->order);
}

static int account_set_order(Account *self, PyObject *value, void *unused) {
    if (value == NULL || !PyObject_TypeCheck(value, &ReorderType)) {
        PyErr_SetString(PyExc_TypeError, "order must be a C ReorderBuffer");
        return -1;
    }
    Py_SETREF(self->order, (Reorder *)Py_NewRef(value));
    return 0;
}

static PyObject *account_get_key(Account *self, void *unused) { return Py_NewRef(self->key); }

static PyObject *account_get_tenant_id(Account *self, void *unused) {
    return Py_NewRef(self->tenant_id);
}

#define GETSET(name) {#name, (getter)account_get_##name, (setter)account_set_##name, NULL, NULL}
static PyGetSetDef account_getset[] = {
    GETSET(failures), GETSET(temporary_lockouts), GETSET(last_failure), GETSET(window_start),
    GETSET(locked_until), GETSET(lock_trigger), GETSET(unlock_pending), GETSET(permanent),
    GETSET(user_id), GETSET(user_name), GETSET(client_ip), GETSET(order),
    {"key", (getter)account_get_key, NULL, NULL, NULL},
    {"tenant_id", (getter)account_get_tenant_id, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};
#undef GETSET

static PyTypeObject AccountType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.LockoutAccount",
    .tp_doc = PyDoc_STR("stream/detection/lockout.py's _Account (its fields) in C"),
    .tp_basicsize = sizeof(Account),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = account_py_new,
    .tp_dealloc = (destructor)account_dealloc,
    .tp_traverse = (traverseproc)account_traverse,
    .tp_clear = (inquiry)account_clear,
    .tp_getset = account_getset,
};

static PyObject *tenant_py_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    if ((args != NULL && PyTuple_GET_SIZE(args) != 0) ||
        (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "LockoutTenant() takes no arguments");
        return NULL;
    }
    return (PyObject *)tenant_new_empty();
}

static int tenant_traverse(Tenant *self, visitproc visit, void *arg) {
    Py_VISIT(self->accounts);
    Py_VISIT(self->counters);
    for (Py_ssize_t i = 0; i < self->due.size; i++) Py_VISIT(self->due.items[i].key);
    for (Py_ssize_t i = 0; i < self->expiries.size; i++) Py_VISIT(self->expiries.items[i].key);
    return 0;
}

static int tenant_clear(Tenant *self) {
    Py_CLEAR(self->accounts);
    Py_CLEAR(self->counters);
    timed_clear(&self->due);
    timed_clear(&self->expiries);
    return 0;
}

static void tenant_dealloc(Tenant *self) {
    PyObject_GC_UnTrack(self);
    tenant_clear(self);
    timed_free(&self->due);
    timed_free(&self->expiries);
    PyObject_GC_Del(self);
}

static PyObject *tenant_track(Tenant *self, PyObject *account) {
    if (!PyObject_TypeCheck(account, &AccountType)) {
        PyErr_SetString(PyExc_TypeError, "track(LockoutAccount)");
        return NULL;
    }
    if (track(self, (Account *)account) < 0) return NULL;
    Py_RETURN_NONE;
}

/* Forget the account of key (its index entries go with it; heap entries turn stale). */
static PyObject *tenant_forget(Tenant *self, PyObject *key) {
    if (PyDict_DelItem(self->accounts, key) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *tenant_get_clock(Tenant *self, void *unused) {
    return optional_time(self->has_clock, self->clock);
}

static int tenant_set_clock(Tenant *self, PyObject *value, void *unused) {
    if (value == NULL || value == Py_None) return self->has_clock = 0, 0;
    if (as_time(value, &self->clock) < 0) return -1;
    return self->has_clock = 1, 0;
}

static PyObject *tenant_get_floor(Tenant *self, void *unused) { return floor_object(self); }

static int tenant_set_floor(Tenant *self, PyObject *value, void *unused) {
    if (value == NULL || value == Py_None) return self->has_floor = 0, 0;
    if (as_time(value, &self->floor) < 0) return -1;
    return self->has_floor = 1, 0;
}

static PyObject *tenant_get_accounts(Tenant *self, void *unused) {
    return Py_NewRef(self->accounts);
}

static PyObject *tenant_get_counters(Tenant *self, void *unused) {
    return Py_NewRef(self->counters);
}

static int tenant_set_counters(Tenant *self, PyObject *value, void *unused) {
    if (value == NULL || !PyDict_CheckExact(value)) {
        PyErr_SetString(PyExc_TypeError, "counters must be a dict");
        return -1;
    }
    Py_SETREF(self->counters, Py_NewRef(value));
    return 0;
}

static PyGetSetDef tenant_getset[] = {
    {"clock", (getter)tenant_get_clock, (setter)tenant_set_clock, NULL, NULL},
    {"floor", (getter)tenant_get_floor, (setter)tenant_set_floor, NULL, NULL},
    {"accounts", (getter)tenant_get_accounts, NULL, NULL, NULL},
    {"counters", (getter)tenant_get_counters, (setter)tenant_set_counters, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* (entries in the due heap, in the expiry heap), stale ones included: for tests */
static PyObject *tenant_index_sizes(Tenant *self, PyObject *unused) {
    return Py_BuildValue("(nn)", self->due.size, self->expiries.size);
}

static PyMethodDef tenant_methods[] = {
    {"index_sizes", (PyCFunction)tenant_index_sizes, METH_NOARGS, NULL},
    {"track", (PyCFunction)tenant_track, METH_O, NULL},
    {"forget", (PyCFunction)tenant_forget, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TenantType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.LockoutTenant",
    .tp_doc = PyDoc_STR("stream/detection/lockout.py's _Tenant in C"),
    .tp_basicsize = sizeof(Tenant),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = tenant_py_new,
    .tp_dealloc = (destructor)tenant_dealloc,
    .tp_traverse = (traverseproc)tenant_traverse,
    .tp_clear = (inquiry)tenant_clear,
    .tp_methods = tenant_methods,
    .tp_getset = tenant_getset,
};

/* LockoutCore(policy_for, lateness, tenants, locked, unlocked, user_key, by_time) */
static PyObject *core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *policy_for, *lateness, *tenants, *locked_hook, *unlocked_hook, *user_key_hook,
        *by_time_hook;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "LockoutCore takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!O!OOOO:LockoutCore", &policy_for, &PyLong_Type, &lateness,
                          &PyDict_Type, &tenants, &locked_hook, &unlocked_hook,
                          &user_key_hook, &by_time_hook))
        return NULL;
    int64_t lateness_us;
    if (as_time(lateness, &lateness_us) < 0) return NULL;
    LockoutCore *self = (LockoutCore *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->policy_for = Py_NewRef(policy_for);
    self->lateness = Py_NewRef(lateness);
    self->tenants = Py_NewRef(tenants);
    self->locked_hook = Py_NewRef(locked_hook);
    self->unlocked_hook = Py_NewRef(unlocked_hook);
    self->user_key_hook = Py_NewRef(user_key_hook);
    self->by_time_hook = Py_NewRef(by_time_hook);
    self->lateness_us = lateness_us;
    self->policy = NULL;
    return (PyObject *)self;
}

static int core_traverse(LockoutCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->policy_for);
    Py_VISIT(self->tenants);
    Py_VISIT(self->lateness);
    Py_VISIT(self->locked_hook);
    Py_VISIT(self->unlocked_hook);
    Py_VISIT(self->user_key_hook);
    Py_VISIT(self->by_time_hook);
    Py_VISIT(self->policy);
    return 0;
}

static int core_clear(LockoutCore *self) {
    Py_CLEAR(self->policy_for);
    Py_CLEAR(self->tenants);
    Py_CLEAR(self->lateness);
    Py_CLEAR(self->locked_hook);
    Py_CLEAR(self->unlocked_hook);
    Py_CLEAR(self->user_key_hook);
    Py_CLEAR(self->by_time_hook);
    Py_CLEAR(self->policy);
    return 0;
}

/* Whether LockoutDetector.prune() may forget account a (its order already forgotten up to
 * floor): nothing buffered or remembered, no lock held or to announce, its watermark not
 * after floor, no failures or only ones older than reset_before; -1 on error. */
static int prunable(const Account *a, const Tenant *tenant, PyObject *floor,
                    int64_t reset_before, const Policy *p) {
    const Reorder *order = a->order;
    if (order->head < order->end || PyDict_GET_SIZE(order->recent_ids) > 0 ||
        a->unlock_pending || a->permanent)
        return 0;
    int marked = PyObject_IsTrue(order->watermark); /* (watermark or 0) <= floor */
    if (marked < 0) return -1;
    if (marked) {
        int after = PyObject_RichCompareBool(order->watermark, floor, Py_GT);
        if (after != 0) return after < 0 ? -1 : 0;
    } else if (tenant->floor < 0) {
        return 0;
    }
    int64_t last_failure = a->has_last_failure ? a->last_failure : 0;
    return a->failures == 0 || (!p->only_permanent && last_failure < reset_before);
}

/* LockoutDetector.prune(tenant_id): the same accounts forgotten, visited here in C (the
 * Python loop cost ~0.5 µs an account: a tenant under credential stuffing holds hundreds
 * of thousands for the failure reset time). */
static PyObject *core_prune(LockoutCore *self, PyObject *tenant_id) {
    PyObject *found = PyDict_GetItemWithError(self->tenants, tenant_id);
    Tenant *tenant = found == NULL ? NULL : of_type(found, &TenantType);
    if (tenant == NULL) return PyErr_Occurred() ? NULL : PyLong_FromLong(0);
    if (!tenant->has_floor) return PyLong_FromLong(0);
    Py_INCREF(tenant); /* held across policy_for, which is Python */
    PyObject *floor = NULL, *forgettable = NULL, *key, *value, *result = NULL;
    int64_t reset, reset_before;
    const Policy *p = core_policy(self, tenant_id);
    if (p == NULL || mul_checked(p->failure_reset_time_seconds, 1000000, &reset) < 0 ||
        sub_checked(tenant->floor, reset, &reset_before) < 0 ||
        (floor = floor_object(tenant)) == NULL || (forgettable = PyList_New(0)) == NULL)
        goto done;
    Py_ssize_t position = 0;
    while (PyDict_Next(tenant->accounts, &position, &key, &value)) {
        Account *a = of_type(value, &AccountType);
        if (a == NULL) goto done;
        /* order.forget(lateness, floor): drops remembered ids only, never an account */
        PyObject *forget_args[2] = {self->lateness, floor};
        PyObject *forgot = reorder_forget(a->order, forget_args, 2);
        int forget = forgot == NULL ? -1 : prunable(a, tenant, floor, reset_before, p);
        Py_XDECREF(forgot);
        if (forget < 0 || (forget && PyList_Append(forgettable, key) < 0)) goto done;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(forgettable); i++)
        if (PyDict_DelItem(tenant->accounts, PyList_GET_ITEM(forgettable, i)) < 0) goto done;
    result = PyLong_FromSsize_t(PyList_GET_SIZE(forgettable));
done:
    Py_XDECREF(floor), Py_XDECREF(forgettable);
    Py_DECREF(tenant);
    return result;
}

static void core_dealloc(LockoutCore *self) {
    PyObject_GC_UnTrack(self);
    core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef core_methods[] = {
    {"observe_identified", (PyCFunction)(void (*)(void))core_observe_identified, METH_FASTCALL,
     NULL},
    {"advance", (PyCFunction)(void (*)(void))core_advance, METH_FASTCALL, NULL},
    {"prune", (PyCFunction)core_prune, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockoutCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.LockoutCore",
    .tp_doc = PyDoc_STR("stream/detection/lockout.py's LockoutDetector hot paths in C"),
    .tp_basicsize = sizeof(LockoutCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
};

static int lockout_init(PyObject *module) {
    if (PyType_Ready(&AccountType) < 0 || PyType_Ready(&TenantType) < 0 ||
        PyType_Ready(&LockoutCoreType) < 0 || PyType_Ready(&PolicyLookupType) < 0 ||
        PyModule_AddObjectRef(module, "PolicyLookup", (PyObject *)&PolicyLookupType) < 0)
        return -1;
    struct { PyObject **slot; const char *text; } texts[] = {
        {&kind_failure, "failure"}, {&kind_success, "success"},
        {&kind_source_unlock, "source_unlock"}, {&irrelevant_text, "irrelevant"},
        {&failure_while_locked_text, "failure_while_locked"},
        {&success_while_locked_text, "success_while_locked"},
        {&quick_login_text, "quick_login"}, {&max_login_failures_text, "max_login_failures"},
        {&max_temporary_lockouts_text, "max_temporary_lockouts"}, {&s_kind, "kind"},
        {&s_user_id, "user_id"}, {&s_user_name, "user_name"}, {&s_client_ip, "client_ip"},
        {&s_event_type, "event_type"}, {&s_outcome, "outcome"}, {&s_id_prefix, "id:"},
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
        if ((*texts[i].slot = PyUnicode_InternFromString(texts[i].text)) == NULL) return -1;
    if (PyModule_AddObjectRef(module, "LockoutAccount", (PyObject *)&AccountType) < 0 ||
        PyModule_AddObjectRef(module, "LockoutTenant", (PyObject *)&TenantType) < 0 ||
        PyModule_AddObjectRef(module, "LockoutCore", (PyObject *)&LockoutCoreType) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ spray core */

/* stream/detection/spray.py's SprayDetector hot paths (observe_identified, advance) in
 * C; that file has the semantics and the reference, NativeSprayDetector there wraps this
 * one. The detector's state stays in the Python dicts it shares with it (addresses per
 * tenant, floors, counters); each address is a SprayAddress: its failures in a ring of
 * (int64 time, user key), its accounts the same dict of [name, count] lists, its index
 * entries (spray.py's _scheduled and _EmptyIndex.scheduled) in its struct; the tenant's
 * two heaps (due, empty) in a SprayIndex, compared by time only as in the lockout core
 * (each pop is followed by a set, a check or a sort by rank). */

typedef struct {
    int64_t at;
    PyObject *key;
} Failure;

typedef struct {
    PyObject_HEAD
    int64_t rank;
    Reorder *order;
    Failure *failures; /* a ring: head, count, capacity */
    Py_ssize_t head, count, capacity;
    PyObject *accounts; /* dict: user key -> [name, failures in window] */
    int64_t quiet_until, due_scheduled, empty_scheduled;
    char has_quiet_until, has_due_scheduled, has_empty_scheduled;
    char listed; /* in the visit list of a time step being worked out */
} Address;

typedef struct {
    PyObject_HEAD
    TimedHeap due, empty;
    int64_t window; /* the window the empty heap was built for */
    char has_empty;
} SprayIndex;

typedef struct {
    char enabled, count_mfa_failures, case_insensitive;
    int64_t distinct_users, window_us, sample_size;
} SprayPolicyView;

typedef struct {
    PyObject_HEAD
    PyObject *policy_for, *lateness, *addresses, *floors, *counters, *indexes;
    PyObject *decision_hook, *keyed_identity_hook, *user_key_hook, *by_time_hook;
    int64_t lateness_us, created;
    PyObject *policy;
    SprayPolicyView parsed;
} SprayCore;

static PyTypeObject AddressType, SprayIndexType, SprayCoreType;
static PyObject *s_user_key, *s_service, *sealed_prefix_text;

static Failure *failure_at(Address *a, Py_ssize_t i) {
    return &a->failures[(a->head + i) % a->capacity];
}

static int failure_append(Address *a, int64_t at, PyObject *key) {
    if (a->count == a->capacity) {
        Py_ssize_t capacity = a->capacity ? 2 * a->capacity : 4;
        Failure *grown = PyMem_Malloc((size_t)capacity * sizeof(Failure));
        if (grown == NULL) return PyErr_NoMemory(), -1;
        for (Py_ssize_t i = 0; i < a->count; i++) grown[i] = *failure_at(a, i);
        PyMem_Free(a->failures);
        a->failures = grown, a->capacity = capacity, a->head = 0;
    }
    a->failures[(a->head + a->count) % a->capacity] = (Failure){at, Py_NewRef(key)};
    a->count++;
    return 0;
}

static void failures_clear(Address *a) {
    for (Py_ssize_t i = 0; i < a->count; i++) Py_CLEAR(failure_at(a, i)->key);
    a->head = a->count = 0;
}

static Address *address_new(int64_t rank) {
    Address *a = PyObject_GC_New(Address, &AddressType);
    if (a == NULL) return NULL;
    a->rank = rank;
    a->order = (Reorder *)reorder_new(&ReorderType, NULL, NULL);
    a->failures = NULL;
    a->head = a->count = a->capacity = 0;
    a->accounts = PyDict_New();
    a->quiet_until = a->due_scheduled = a->empty_scheduled = 0;
    a->has_quiet_until = a->has_due_scheduled = a->has_empty_scheduled = 0;
    a->listed = 0;
    PyObject_GC_Track(a);
    if (a->order == NULL || a->accounts == NULL) {
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static int address_traverse(Address *self, visitproc visit, void *arg) {
    Py_VISIT(self->order);
    Py_VISIT(self->accounts);
    for (Py_ssize_t i = 0; i < self->count; i++) Py_VISIT(failure_at(self, i)->key);
    return 0;
}

static int address_clear(Address *self) {
    Py_CLEAR(self->order);
    Py_CLEAR(self->accounts);
    if (self->failures != NULL) failures_clear(self);
    return 0;
}

static void address_dealloc(Address *self) {
    PyObject_GC_UnTrack(self);
    address_clear(self);
    PyMem_Free(self->failures);
    PyObject_GC_Del(self);
}

/* accounts[key], a [name, count] list (borrowed); NULL when absent, or with TypeError */
static PyObject *entry_in(PyObject *accounts, PyObject *key) {
    PyObject *entry = PyDict_GetItemWithError(accounts, key);
    if (entry != NULL && !(PyList_CheckExact(entry) && PyList_GET_SIZE(entry) == 2)) {
        PyErr_Format(PyExc_TypeError, "expected a [name, count] list, got %R", entry);
        return NULL;
    }
    return entry;
}

/* _Address.add(): one failure of key (name kept from its first failure in the window). */
static int address_add(Address *a, int64_t at, PyObject *key, PyObject *name) {
    if (failure_append(a, at, key) < 0) return -1;
    PyObject *entry = entry_in(a->accounts, key);
    if (entry == NULL) {
        if (PyErr_Occurred()) return -1;
        entry = Py_BuildValue("[Oi]", name, 1);
        if (entry == NULL) return -1;
        int failed = PyDict_SetItem(a->accounts, key, entry);
        Py_DECREF(entry);
        return failed;
    }
    PyObject *more = PyNumber_Add(PyList_GET_ITEM(entry, 1), one);
    if (more == NULL) return -1;
    return PyList_SetItem(entry, 1, more);
}

/* _Address.empty_at(window): sets *at, or *has = 0 when None. */
static int empty_at(Address *a, int64_t window, int64_t *at, char *has) {
    Reorder *order = a->order;
    if (order->head < order->end || PyDict_GET_SIZE(order->recent_ids) > 0) {
        *has = 0;
        return 0;
    }
    int64_t mark = 0, last;
    if (order->watermark != Py_None) {
        int truth = PyObject_IsTrue(order->watermark);
        if (truth < 0 || (truth && as_time(order->watermark, &mark) < 0)) return -1;
    }
    if (a->has_quiet_until && a->quiet_until > mark) mark = a->quiet_until;
    if (a->count > 0) {
        if (add_checked(failure_at(a, a->count - 1)->at, window, &last) < 0) return -1;
        if (last > mark) mark = last;
    }
    *at = mark, *has = 1;
    return 0;
}

/* _Address.failed(): one released failure; appends an alert, if it makes one. */
static int spray_failed(PyObject *decisions, SprayCore *core, PyObject *tenant_id,
                        PyObject *client_ip, Address *a, PyObject *item,
                        const SprayPolicyView *p) {
    PyObject *event_id = PyTuple_GET_ITEM(item, 1), *payload = PyTuple_GET_ITEM(item, 2);
    int64_t now, oldest_kept;
    if (as_time(PyTuple_GET_ITEM(item, 0), &now) < 0 ||
        sub_checked(now, p->window_us, &oldest_kept) < 0)
        return -1;
    /* Released in event-time order: the window only slides forward. */
    while (a->count > 0 && failure_at(a, 0)->at <= oldest_kept) {
        PyObject *key = failure_at(a, 0)->key;
        a->head = (a->head + 1) % a->capacity, a->count--;
        PyObject *entry = entry_in(a->accounts, key);
        int failed = entry == NULL;
        if (!failed) {
            PyObject *fewer = PyNumber_Subtract(PyList_GET_ITEM(entry, 1), one);
            failed = fewer == NULL;
            if (!failed) {
                int zero = PyObject_Not(fewer);
                failed = zero < 0 || PyList_SetItem(entry, 1, fewer) < 0 ||
                         (zero && PyDict_DelItem(a->accounts, key) < 0);
            }
        } else if (!PyErr_Occurred()) {
            PyErr_SetObject(PyExc_KeyError, key);
        }
        Py_DECREF(key);
        if (failed) return -1;
    }
    if (a->has_quiet_until && now < a->quiet_until) return 0; /* an alerted window */
    PyObject *key = PyObject_GetItem(payload, s_user_key), *name;
    if (key == NULL) return -1;
    name = PyObject_GetItem(payload, s_user_name);
    int added = name == NULL ? -1 : address_add(a, now, key, name);
    Py_DECREF(key);
    Py_XDECREF(name);
    if (added < 0) return -1;
    if (PyDict_GET_SIZE(a->accounts) < p->distinct_users) return 0;
    int64_t window_start = failure_at(a, 0)->at;
    PyObject *decision = PyObject_CallFunction(
        core->decision_hook, "OOLOnLOn", tenant_id, client_ip, (long long)now, event_id,
        a->count, (long long)window_start, a->accounts, (Py_ssize_t)p->sample_size);
    if (decision == NULL) return -1;
    int failed = PyList_Append(decisions, decision);
    Py_DECREF(decision);
    if (failed < 0 || add_checked(window_start, p->window_us, &a->quiet_until) < 0) return -1;
    a->has_quiet_until = 1;
    failures_clear(a);
    PyDict_Clear(a->accounts);
    return 0;
}

/* addresses[ip] (borrowed): NULL when absent, NULL with an error set when not an Address */
static Address *address_in(PyObject *addresses, PyObject *ip) {
    PyObject *found = PyDict_GetItemWithError(addresses, ip);
    return found == NULL ? NULL : of_type(found, &AddressType);
}

/* dict[tenant_id] (borrowed) when it is a dict; NULL when absent, or with TypeError */
static PyObject *dict_in(PyObject *dict, PyObject *tenant_id) {
    PyObject *found = PyDict_GetItemWithError(dict, tenant_id);
    if (found != NULL && !PyDict_Check(found)) {
        PyErr_Format(PyExc_TypeError, "expected a dict, got %R", found);
        return NULL;
    }
    return found;
}

static SprayIndex *spray_index(SprayCore *self, PyObject *tenant_id) {
    SprayIndex *index = (SprayIndex *)PyDict_GetItemWithError(self->indexes, tenant_id);
    if (index != NULL || PyErr_Occurred()) return index;
    index = PyObject_New(SprayIndex, &SprayIndexType);
    if (index == NULL) return NULL;
    index->due = (TimedHeap){NULL, 0, 0};
    index->empty = (TimedHeap){NULL, 0, 0};
    index->window = 0, index->has_empty = 0;
    int failed = PyDict_SetItem(self->indexes, tenant_id, (PyObject *)index);
    Py_DECREF(index);
    return failed < 0 ? NULL : index;
}

static void spray_index_dealloc(SprayIndex *self) {
    timed_free(&self->due);
    timed_free(&self->empty);
    PyObject_Free(self);
}

/* _empty_index(): the tenant's empty heap for window, built anew when that changed. */
static int empty_index(SprayIndex *index, PyObject *addresses, int64_t window) {
    if (index->has_empty && index->window == window) return 0;
    timed_clear(&index->empty);
    index->window = window, index->has_empty = 1;
    if (addresses == NULL) return 0;
    Py_ssize_t position = 0;
    PyObject *ip, *value;
    while (PyDict_Next(addresses, &position, &ip, &value)) {
        Address *a = of_type(value, &AddressType);
        if (a == NULL) return -1;
        if (empty_at(a, window, &a->empty_scheduled, &a->has_empty_scheduled) < 0) return -1;
        if (a->has_empty_scheduled && timed_push(&index->empty, a->empty_scheduled, ip) < 0)
            return -1;
    }
    return 0;
}

/* _index(): the address's entries at its due and in the empty index. */
static int spray_reindex(SprayIndex *index, PyObject *addresses, PyObject *ip, Address *a,
                         int64_t window) {
    PyObject *due_value = reorder_due(a->order, NULL);
    if (due_value == NULL) return -1;
    if (due_value != Py_None) {
        int64_t due;
        int failed = as_time(due_value, &due);
        Py_DECREF(due_value);
        if (failed < 0) return -1;
        if (!a->has_due_scheduled || due < a->due_scheduled) {
            a->due_scheduled = due, a->has_due_scheduled = 1;
            if (timed_push(&index->due, due, ip) < 0) return -1;
        }
    } else {
        Py_DECREF(due_value);
    }
    if (!index->has_empty || index->window != window)
        return empty_index(index, addresses, window);
    int64_t at;
    char has;
    if (empty_at(a, window, &at, &has) < 0) return -1;
    if (!has) return 0; /* its entry, if any, is kept: visited early, it is put back */
    if (!a->has_empty_scheduled || at < a->empty_scheduled) {
        a->empty_scheduled = at, a->has_empty_scheduled = 1;
        if (timed_push(&index->empty, at, ip) < 0) return -1;
    }
    return 0;
}

static const SprayPolicyView *spray_policy(SprayCore *self, PyObject *tenant_id) {
    PyObject *policy = policy_of(self->policy_for, tenant_id);
    if (policy == NULL) return NULL;
    if (policy == self->policy) {
        Py_DECREF(policy);
        return &self->parsed;
    }
    SprayPolicyView p;
    int64_t window_seconds;
    if (policy_flag(policy, "enabled", &p.enabled) < 0 ||
        policy_flag(policy, "count_mfa_failures", &p.count_mfa_failures) < 0 ||
        policy_flag(policy, "case_insensitive_user_names", &p.case_insensitive) < 0 ||
        policy_int(policy, "distinct_users", &p.distinct_users) < 0 ||
        policy_int(policy, "window_seconds", &window_seconds) < 0 ||
        policy_int(policy, "sample_size", &p.sample_size) < 0 ||
        mul_checked(window_seconds, 1000000, &p.window_us) < 0) {
        Py_DECREF(policy);
        return NULL;
    }
    Py_XSETREF(self->policy, policy);
    self->parsed = p;
    return &self->parsed;
}

/* _release(): release the address's due failures into decisions, then index it. */
static int spray_release(PyObject *decisions, SprayCore *self, PyObject *tenant_id,
                         PyObject *ip, Address *a, PyObject *addresses, SprayIndex *index,
                         PyObject *floor, const SprayPolicyView *p) {
    PyObject *release_args[2] = {self->lateness, floor};
    PyObject *released = reorder_release(a->order, release_args, 2);
    if (released == NULL) return -1;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(released); i++)
        if (spray_failed(decisions, self, tenant_id, ip, a, PyList_GET_ITEM(released, i), p) <
            0) {
            Py_DECREF(released);
            return -1;
        }
    Py_DECREF(released);
    return spray_reindex(index, addresses, ip, a, p->window_us);
}

/* keyed_identity(event, "client_ip"): a str that is not sealed here, the rest in Python. */
static PyObject *client_address(SprayCore *self, PyObject *event) {
    PyObject *value = event_get(event, s_client_ip);
    if (value == NULL) return NULL;
    if (!PyUnicode_Check(value)) {
        Py_DECREF(value);
        Py_RETURN_NONE;
    }
    Py_ssize_t sealed = PyUnicode_Tailmatch(value, sealed_prefix_text, 0, PY_SSIZE_T_MAX, -1);
    if (sealed < 0) {
        Py_DECREF(value);
        return NULL;
    }
    if (!sealed) return value;
    Py_DECREF(value);
    return PyObject_CallFunctionObjArgs(self->keyed_identity_hook, event, s_client_ip, NULL);
}

static PyObject *spray_observe_identified(SprayCore *self, PyObject *const *args,
                                          Py_ssize_t nargs) {
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "observe_identified(event, tenant_id, event_id, occurred_at)");
        return NULL;
    }
    PyObject *event = args[0], *tenant_id = args[1], *event_id = args[2], *at = args[3];
    PyObject *counters = dict_in(self->counters, tenant_id);
    if (counters == NULL) {
        if (PyErr_Occurred()) return NULL;
        counters = PyDict_New();
        if (counters == NULL) return NULL;
        int failed = PyDict_SetItem(self->counters, tenant_id, counters);
        Py_DECREF(counters);
        if (failed < 0) return NULL;
    }
    PyObject *event_type = event_get(event, s_event_type), *outcome = NULL, *service = NULL;
    PyObject *client_ip = NULL, *key = NULL, *payload = NULL, *floor = NULL;
    PyObject *decisions = NULL;
    Address *address = NULL;
    if (event_type == NULL) return NULL;
    int relevant = is_text(event_type, "LOGIN_FAILED") || is_text(event_type, "LOGIN") ||
                   is_text(event_type, "MFA_FAILURE");
    const SprayPolicyView *p = NULL;
    if (relevant) {
        p = spray_policy(self, tenant_id);
        if (p == NULL || (service = event_get(event, s_service)) == NULL ||
            (outcome = event_get(event, s_outcome)) == NULL)
            goto failed;
        relevant = p->enabled && !is_text(service, "authtrail-lockout") &&
                   (is_text(event_type, "LOGIN_FAILED") ||
                    (is_text(event_type, "LOGIN") && is_text(outcome, "FAILURE")) ||
                    (is_text(event_type, "MFA_FAILURE") && p->count_mfa_failures));
    }
    if (relevant) {
        if ((client_ip = client_address(self, event)) == NULL) goto failed;
        int truth = PyObject_IsTrue(client_ip);
        if (truth < 0) goto failed;
        relevant = truth;
    }
    if (relevant) {
        if ((key = user_key_of(event, p->case_insensitive, self->user_key_hook)) == NULL)
            goto failed;
        relevant = key != Py_None;
    }
    if (!relevant) {
        if (count(counters, irrelevant_text) < 0) goto failed;
        Py_XDECREF(event_type), Py_XDECREF(outcome), Py_XDECREF(service);
        Py_XDECREF(client_ip), Py_XDECREF(key);
        return PyList_New(0);
    }
    PyObject *addresses = dict_in(self->addresses, tenant_id);
    if (addresses == NULL) {
        if (PyErr_Occurred() || (addresses = PyDict_New()) == NULL) goto failed;
        int failed = PyDict_SetItem(self->addresses, tenant_id, addresses);
        Py_DECREF(addresses);
        if (failed < 0) goto failed;
    }
    Address *a = address_in(addresses, client_ip);
    if (a == NULL) {
        if (PyErr_Occurred() || (a = address_new(++self->created)) == NULL) goto failed;
        int failed = PyDict_SetItem(addresses, client_ip, (PyObject *)a);
        Py_DECREF(a);
        if (failed < 0) goto failed;
    }
    address = (Address *)Py_NewRef(a); /* held across the Python decision */
    PyObject *name = event_get(event, s_user_name);
    if (name == NULL) goto failed;
    int named = PyObject_IsTrue(name);
    if (named < 0) {
        Py_DECREF(name);
        goto failed;
    }
    payload = _PyDict_NewPresized(2);
    int built = payload != NULL && PyDict_SetItem(payload, s_user_key, key) == 0 &&
                PyDict_SetItem(payload, s_user_name, named ? name : key) == 0;
    Py_DECREF(name);
    if (!built) goto failed;
    floor = PyDict_GetItemWithError(self->floors, tenant_id);
    if (floor == NULL && PyErr_Occurred()) goto failed;
    floor = Py_NewRef(floor ? floor : Py_None);
    PyObject *offer_args[5] = {at, event_id, payload, self->lateness, floor};
    PyObject *offered = reorder_offer(a->order, offer_args, 5);
    if (offered == NULL) goto failed;
    int counted = count(counters, offered);
    Py_DECREF(offered);
    SprayIndex *index;
    if (counted < 0 || (decisions = PyList_New(0)) == NULL ||
        (index = spray_index(self, tenant_id)) == NULL ||
        spray_release(decisions, self, tenant_id, client_ip, a, addresses, index, floor, p) < 0)
        goto failed;
    Py_DECREF(event_type), Py_DECREF(outcome), Py_DECREF(service), Py_DECREF(client_ip);
    Py_DECREF(key), Py_DECREF(payload), Py_DECREF(floor), Py_DECREF(address);
    return decisions;
failed:
    Py_XDECREF(event_type), Py_XDECREF(outcome), Py_XDECREF(service), Py_XDECREF(client_ip);
    Py_XDECREF(key), Py_XDECREF(payload), Py_XDECREF(floor), Py_XDECREF(decisions);
    Py_XDECREF(address);
    return NULL;
}

typedef struct {
    Address *address;
    PyObject *ip; /* borrowed from the visit list */
} Visit;

static int rank_order(const void *x, const void *y) {
    int64_t a = ((const Visit *)x)->address->rank, b = ((const Visit *)y)->address->rank;
    return (a > b) - (a < b);
}

static PyObject *spray_advance(SprayCore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "advance(tenant_id, now)");
        return NULL;
    }
    PyObject *tenant_id = args[0];
    int64_t now, floor_us, cutoff;
    if (as_time(args[1], &now) < 0) return NULL;
    PyObject *known = PyDict_GetItemWithError(self->floors, tenant_id);
    if (known == NULL && PyErr_Occurred()) return NULL;
    floor_us = now;
    if (known != NULL) {
        int64_t before;
        if (as_time(known, &before) < 0) return NULL;
        if (before > now) floor_us = before;
    }
    PyObject *floor = PyLong_FromLongLong(floor_us);
    if (floor == NULL || PyDict_SetItem(self->floors, tenant_id, floor) < 0) {
        Py_XDECREF(floor);
        return NULL;
    }
    PyObject *decisions = NULL, *ips = NULL, *addresses = NULL;
    Visit *visit = NULL;
    const SprayPolicyView *p = spray_policy(self, tenant_id);
    SprayIndex *index;
    if (p == NULL || (decisions = PyList_New(0)) == NULL || (ips = PyList_New(0)) == NULL ||
        (index = spray_index(self, tenant_id)) == NULL ||
        sub_checked(floor_us, self->lateness_us, &cutoff) < 0)
        goto failed;
    addresses = dict_in(self->addresses, tenant_id);
    if (addresses == NULL && PyErr_Occurred()) goto failed;
    Py_XINCREF(addresses); /* held across the Python decisions */
    /* Only addresses whose due the cutoff reached can release anything (spray.py). */
    while (index->due.size > 0 && index->due.items[0].at <= cutoff) {
        Timed top = timed_pop(&index->due);
        Address *a = addresses == NULL ? NULL : address_in(addresses, top.key);
        int listed = 0;
        if (a == NULL && PyErr_Occurred()) {
            listed = -1;
        } else if (a != NULL) {
            if (a->has_due_scheduled && a->due_scheduled == top.at) a->has_due_scheduled = 0;
            if (!a->listed) { /* each address once */
                listed = PyList_Append(ips, top.key) < 0 ? -1 : 0;
                a->listed = 1;
            }
        }
        Py_DECREF(top.key);
        if (listed < 0) goto failed;
    }
    Py_ssize_t visits = PyList_GET_SIZE(ips);
    if (visits > 0) {
        visit = PyMem_Malloc((size_t)visits * sizeof(Visit));
        if (visit == NULL) {
            PyErr_NoMemory();
            goto failed;
        }
        for (Py_ssize_t i = 0; i < visits; i++) {
            PyObject *ip = PyList_GET_ITEM(ips, i);
            /* listed: checked Addresses, held across the Python decisions */
            visit[i] = (Visit){(Address *)Py_NewRef(PyDict_GetItem(addresses, ip)), ip};
            visit[i].address->listed = 0;
        }
        qsort(visit, (size_t)visits, sizeof(Visit), rank_order); /* creation order */
        int failed = 0;
        for (Py_ssize_t i = 0; i < visits && !failed; i++)
            failed = spray_release(decisions, self, tenant_id, visit[i].ip, visit[i].address,
                                   addresses, index, floor, p) < 0;
        for (Py_ssize_t i = 0; i < visits; i++) Py_DECREF(visit[i].address);
        if (failed) goto failed;
    }
    /* Forget addresses whose empty time has come (the empty index). */
    if (empty_index(index, addresses, p->window_us) < 0) goto failed;
    while (index->empty.size > 0 && index->empty.items[0].at <= now) {
        Timed top = timed_pop(&index->empty);
        Address *a = addresses == NULL ? NULL : address_in(addresses, top.key);
        int failed = a == NULL && PyErr_Occurred();
        if (!failed && a != NULL && a->has_empty_scheduled && a->empty_scheduled == top.at) {
            a->has_empty_scheduled = 0;
            int64_t at;
            char has;
            failed = empty_at(a, index->window, &at, &has) < 0;
            if (!failed && has && at <= now) {
                failed = PyDict_DelItem(addresses, top.key) < 0;
            } else if (!failed && has) {
                a->empty_scheduled = at, a->has_empty_scheduled = 1;
                failed = timed_push(&index->empty, at, top.key) < 0;
            }
        }
        Py_DECREF(top.key);
        if (failed) goto failed;
    }
    PyMem_Free(visit);
    Py_DECREF(ips), Py_DECREF(floor);
    Py_XDECREF(addresses);
    if (PyList_GET_SIZE(decisions) < 2) return decisions;
    PyObject *sorted = PyObject_CallOneArg(self->by_time_hook, decisions);
    Py_DECREF(decisions);
    return sorted;
failed:
    PyMem_Free(visit);
    Py_XDECREF(decisions), Py_XDECREF(ips), Py_XDECREF(floor), Py_XDECREF(addresses);
    return NULL;
}

/* ---- the Python side of addresses (spray.py's state code) and the core */

static PyObject *address_py_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    long long rank = 0;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "SprayAddress(rank=0)");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "|L:SprayAddress", &rank)) return NULL;
    return (PyObject *)address_new(rank);
}

/* add(occurred_at, key, name): _Address.add() (for from_state) */
static PyObject *address_py_add(Address *self, PyObject *const *args, Py_ssize_t nargs) {
    int64_t at;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "add(occurred_at, key, name)");
        return NULL;
    }
    if (as_time(args[0], &at) < 0 || address_add(self, at, args[1], args[2]) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyObject *address_get_failures(Address *self, void *unused) {
    PyObject *failures = PyList_New(self->count);
    if (failures == NULL) return NULL;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Failure *failure = failure_at(self, i);
        PyObject *item = Py_BuildValue("(LO)", (long long)failure->at, failure->key);
        if (item == NULL) {
            Py_DECREF(failures);
            return NULL;
        }
        PyList_SET_ITEM(failures, i, item);
    }
    return failures;
}

static PyObject *address_get_accounts(Address *self, void *unused) {
    return Py_NewRef(self->accounts);
}

static PyObject *address_get_order(Address *self, void *unused) {
    return Py_NewRef((PyObject *)self->order);
}

static int address_set_order(Address *self, PyObject *value, void *unused) {
    if (value == NULL || !PyObject_TypeCheck(value, &ReorderType)) {
        PyErr_SetString(PyExc_TypeError, "order must be a C ReorderBuffer");
        return -1;
    }
    Py_SETREF(self->order, (Reorder *)Py_NewRef(value));
    return 0;
}

static PyObject *address_get_quiet_until(Address *self, void *unused) {
    return optional_time(self->has_quiet_until, self->quiet_until);
}

static int address_set_quiet_until(Address *self, PyObject *value, void *unused) {
    if (value == NULL || value == Py_None) return self->has_quiet_until = 0, 0;
    if (as_time(value, &self->quiet_until) < 0) return -1;
    return self->has_quiet_until = 1, 0;
}

static PyObject *address_get_rank(Address *self, void *unused) {
    return PyLong_FromLongLong(self->rank);
}

static int address_set_rank(Address *self, PyObject *value, void *unused) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete rank");
        return -1;
    }
    return as_time(value, &self->rank);
}

static PyGetSetDef address_getset[] = {
    {"failures", (getter)address_get_failures, NULL, "(occurred_at, user key), oldest first",
     NULL},
    {"accounts", (getter)address_get_accounts, NULL, NULL, NULL},
    {"order", (getter)address_get_order, (setter)address_set_order, NULL, NULL},
    {"quiet_until", (getter)address_get_quiet_until, (setter)address_set_quiet_until, NULL,
     NULL},
    {"rank", (getter)address_get_rank, (setter)address_set_rank, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef address_methods[] = {
    {"add", (PyCFunction)(void (*)(void))address_py_add, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AddressType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.SprayAddress",
    .tp_doc = PyDoc_STR("stream/detection/spray.py's _Address (its fields) in C"),
    .tp_basicsize = sizeof(Address),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = address_py_new,
    .tp_dealloc = (destructor)address_dealloc,
    .tp_traverse = (traverseproc)address_traverse,
    .tp_clear = (inquiry)address_clear,
    .tp_methods = address_methods,
    .tp_getset = address_getset,
};

/* The heaps hold keys (str) only: no reference cycle through them, so no GC. */
static PyTypeObject SprayIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.SprayIndex",
    .tp_doc = PyDoc_STR("one tenant's due and empty heaps (spray.py's _due and _EmptyIndex)"),
    .tp_basicsize = sizeof(SprayIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)spray_index_dealloc,
};

/* SprayCore(policy_for, lateness, addresses, floors, counters, decision, keyed_identity,
 *           user_key, by_time) */
static PyObject *spray_core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *policy_for, *lateness, *addresses, *floors, *counters, *decision_hook,
        *keyed_identity_hook, *user_key_hook, *by_time_hook;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "SprayCore takes positional arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!O!O!O!OOOO:SprayCore", &policy_for, &PyLong_Type,
                          &lateness, &PyDict_Type, &addresses, &PyDict_Type, &floors,
                          &PyDict_Type, &counters, &decision_hook, &keyed_identity_hook,
                          &user_key_hook, &by_time_hook))
        return NULL;
    int64_t lateness_us;
    if (as_time(lateness, &lateness_us) < 0) return NULL;
    SprayCore *self = (SprayCore *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->policy_for = Py_NewRef(policy_for);
    self->lateness = Py_NewRef(lateness);
    self->addresses = Py_NewRef(addresses);
    self->floors = Py_NewRef(floors);
    self->counters = Py_NewRef(counters);
    self->decision_hook = Py_NewRef(decision_hook);
    self->keyed_identity_hook = Py_NewRef(keyed_identity_hook);
    self->user_key_hook = Py_NewRef(user_key_hook);
    self->by_time_hook = Py_NewRef(by_time_hook);
    self->indexes = PyDict_New();
    self->lateness_us = lateness_us;
    self->created = 0;
    self->policy = NULL;
    if (self->indexes == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int spray_core_traverse(SprayCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->policy_for);
    Py_VISIT(self->lateness);
    Py_VISIT(self->addresses);
    Py_VISIT(self->floors);
    Py_VISIT(self->counters);
    Py_VISIT(self->indexes);
    Py_VISIT(self->decision_hook);
    Py_VISIT(self->keyed_identity_hook);
    Py_VISIT(self->user_key_hook);
    Py_VISIT(self->by_time_hook);
    Py_VISIT(self->policy);
    return 0;
}

static int spray_core_clear(SprayCore *self) {
    Py_CLEAR(self->policy_for);
    Py_CLEAR(self->lateness);
    Py_CLEAR(self->addresses);
    Py_CLEAR(self->floors);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->indexes);
    Py_CLEAR(self->decision_hook);
    Py_CLEAR(self->keyed_identity_hook);
    Py_CLEAR(self->user_key_hook);
    Py_CLEAR(self->by_time_hook);
    Py_CLEAR(self->policy);
    return 0;
}

static void spray_core_dealloc(SprayCore *self) {
    PyObject_GC_UnTrack(self);
    spray_core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* load_due(tenant_id, client_ip): from_state()'s entry of a loaded address at its due (the
 * empty index is built at the tenant's first step, as spray.py does). */
static PyObject *spray_load_due(SprayCore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "load_due(tenant_id, client_ip)");
        return NULL;
    }
    PyObject *addresses = dict_in(self->addresses, args[0]);
    Address *a = addresses == NULL ? NULL : address_in(addresses, args[1]);
    if (a == NULL) {
        if (!PyErr_Occurred()) PyErr_SetObject(PyExc_KeyError, args[1]);
        return NULL;
    }
    SprayIndex *index = spray_index(self, args[0]);
    if (index == NULL) return NULL;
    PyObject *due_value = reorder_due(a->order, NULL);
    if (due_value == NULL) return NULL;
    int64_t due;
    int failed = due_value != Py_None &&
                 (as_time(due_value, &due) < 0 || timed_push(&index->due, due, args[1]) < 0);
    if (!failed && due_value != Py_None) a->due_scheduled = due, a->has_due_scheduled = 1;
    Py_DECREF(due_value);
    if (failed) return NULL;
    Py_RETURN_NONE;
}

/* index_sizes(tenant_id): (entries in its due heap, in its empty heap), stale ones
 * included: for tests */
static PyObject *spray_index_sizes(SprayCore *self, PyObject *tenant_id) {
    SprayIndex *index = spray_index(self, tenant_id);
    if (index == NULL) return NULL;
    return Py_BuildValue("(nn)", index->due.size, index->empty.size);
}

static PyObject *spray_get_created(SprayCore *self, void *unused) {
    return PyLong_FromLongLong(self->created);
}

static int spray_set_created(SprayCore *self, PyObject *value, void *unused) {
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete created");
        return -1;
    }
    return as_time(value, &self->created);
}

static PyGetSetDef spray_core_getset[] = {
    {"created", (getter)spray_get_created, (setter)spray_set_created,
     "addresses made so far: the rank of the next one less one", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef spray_core_methods[] = {
    {"observe_identified", (PyCFunction)(void (*)(void))spray_observe_identified, METH_FASTCALL,
     NULL},
    {"advance", (PyCFunction)(void (*)(void))spray_advance, METH_FASTCALL, NULL},
    {"load_due", (PyCFunction)(void (*)(void))spray_load_due, METH_FASTCALL, NULL},
    {"index_sizes", (PyCFunction)spray_index_sizes, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SprayCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.SprayCore",
    .tp_doc = PyDoc_STR("stream/detection/spray.py's SprayDetector hot paths in C"),
    .tp_basicsize = sizeof(SprayCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = spray_core_new,
    .tp_dealloc = (destructor)spray_core_dealloc,
    .tp_traverse = (traverseproc)spray_core_traverse,
    .tp_clear = (inquiry)spray_core_clear,
    .tp_methods = spray_core_methods,
    .tp_getset = spray_core_getset,
};

static int spray_init(PyObject *module) {
    if (PyType_Ready(&AddressType) < 0 || PyType_Ready(&SprayIndexType) < 0 ||
        PyType_Ready(&SprayCoreType) < 0)
        return -1;
    if ((s_user_key = PyUnicode_InternFromString("user_key")) == NULL ||
        (s_service = PyUnicode_InternFromString("service")) == NULL ||
        (sealed_prefix_text = PyUnicode_InternFromString("authtrail-sealed-v1:")) == NULL)
        return -1;
    if (PyModule_AddObjectRef(module, "SprayAddress", (PyObject *)&AddressType) < 0 ||
        PyModule_AddObjectRef(module, "SprayCore", (PyObject *)&SprayCoreType) < 0)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ admission */

/* stream/worker/admission.py's check_event() for the usual event: True only when every
 * rule there certainly passes, so the worker may skip it; False sends the event through
 * that function, which owns every rule and error. Its tenant checks are the ones it
 * remembered as passed (its _admitted set), and an identity is taken as not reserved
 * only when it is ASCII and holds no "authtrail" in any case: every reserved service, id
 * prefix and event type holds it, and ASCII folds (NFKC, strip, casefold) to its own
 * lower case. */

typedef struct {
    PyObject_HEAD
    PyObject *admitted;    /* admission.py's _admitted set */
    PyObject *max_id_chars_object;
    int64_t max_record_bytes, max_id_chars, earliest, max_future_us;
} AdmissionCore;

static PyObject *s_event_type_other, *s_tenant_id, *s_event_id, *s_occurred_at;

/* event[name] if it is a non-empty exact str (borrowed); NULL without an error when not */
static PyObject *identity_text(PyObject *event, PyObject *name) {
    PyObject *value = PyDict_GetItemWithError(event, name);
    if (value == NULL || !PyUnicode_CheckExact(value) || PyUnicode_GET_LENGTH(value) == 0)
        return NULL;
    return value;
}

/* value as an int64: exact_int_in over the whole range (1, 0 or -1, as there) */
static int exact_int64(PyObject *value, int64_t *out) {
    long long number;
    int fits = exact_int_in(value, LLONG_MIN, LLONG_MAX, &number);
    if (fits == 1) *out = number;
    return fits;
}

/* Whether text (a str, or absent/None) surely names no reserved identity */
static int plainly_unreserved(PyObject *text) {
    if (text == NULL || text == Py_None) return 1;
    if (!PyUnicode_CheckExact(text) || !PyUnicode_IS_ASCII(text)) return 0;
    const char *data = (const char *)PyUnicode_DATA(text);
    Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    static const char word[] = "authtrail";
    const Py_ssize_t word_size = (Py_ssize_t)sizeof word - 1;
    for (Py_ssize_t at = 0; at + word_size <= size; at++) {
        Py_ssize_t i = 0;
        while (i < word_size && (data[at + i] | 0x20) == word[i]) i++;
        if (i == word_size) return 0;
    }
    return 1;
}

static PyObject *admission_usual(AdmissionCore *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "usual(event, record_bytes, record_timestamp, partition, partitions)");
        return NULL;
    }
    PyObject *event = args[0], *partition = args[3], *partitions = args[4];
    long long record_bytes = PyLong_Check(args[1]) ? PyLong_AsLongLong(args[1]) : -1;
    if (record_bytes == -1 && PyErr_Occurred()) PyErr_Clear(); /* beyond 64 bits: Python's */
    if (record_bytes < 0 || record_bytes > self->max_record_bytes || !PyDict_CheckExact(event))
        Py_RETURN_FALSE;
    /* an empty tenant id is never admitted: not in the set either way */
    PyObject *tenant = identity_text(event, s_tenant_id);
    PyObject *event_id = tenant == NULL ? NULL : identity_text(event, s_event_id);
    if (PyErr_Occurred()) return NULL;
    if (event_id == NULL || PyUnicode_GET_LENGTH(event_id) > self->max_id_chars ||
        Py_UNICODE_ISSPACE(PyUnicode_READ_CHAR(event_id, 0)))
        Py_RETURN_FALSE;
    PyObject *admitted_as = PyTuple_Pack(4, tenant, partition, partitions,
                                         self->max_id_chars_object);
    if (admitted_as == NULL) return NULL;
    int admitted = PySet_Contains(self->admitted, admitted_as);
    Py_DECREF(admitted_as);
    if (admitted < 0) return NULL;
    if (!admitted) Py_RETURN_FALSE;
    PyObject *service = PyDict_GetItemWithError(event, s_service);
    PyObject *other = service == NULL && PyErr_Occurred()
                          ? NULL
                          : PyDict_GetItemWithError(event, s_event_type_other);
    if (PyErr_Occurred()) return NULL;
    if (!plainly_unreserved(service) || !plainly_unreserved(event_id) ||
        !plainly_unreserved(other))
        Py_RETURN_FALSE;
    PyObject *at = PyDict_GetItemWithError(event, s_occurred_at);
    if (at == NULL) {
        if (PyErr_Occurred()) return NULL;
        Py_RETURN_FALSE;
    }
    int64_t occurred_at, stamp, latest;
    int fits = exact_int64(at, &occurred_at);
    if (fits < 0) return NULL;
    if (!fits || occurred_at < self->earliest) Py_RETURN_FALSE;
    if (args[2] != Py_None) {
        if ((fits = exact_int64(args[2], &stamp)) < 0) return NULL;
        if (!fits || __builtin_add_overflow(stamp, self->max_future_us, &latest) ||
            occurred_at > latest)
            Py_RETURN_FALSE;
    }
    Py_RETURN_TRUE;
}

static int admission_traverse(AdmissionCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->admitted);
    return 0;
}

static int admission_clear(AdmissionCore *self) {
    Py_CLEAR(self->admitted);
    Py_CLEAR(self->max_id_chars_object);
    return 0;
}

static void admission_dealloc(AdmissionCore *self) {
    PyObject_GC_UnTrack(self);
    admission_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* AdmissionCore(admitted, max_record_bytes, max_id_chars, earliest_micros,
 * max_future_seconds) */
static PyObject *admission_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *admitted, *max_id_chars;
    long long max_record_bytes, earliest, max_future_seconds;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "AdmissionCore takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!LO!LL:AdmissionCore", &PySet_Type, &admitted,
                          &max_record_bytes, &PyLong_Type, &max_id_chars, &earliest,
                          &max_future_seconds))
        return NULL;
    long long id_chars = PyLong_AsLongLong(max_id_chars);
    if (id_chars == -1 && PyErr_Occurred()) return NULL;
    int64_t future_us;
    if (!PyLong_CheckExact(max_id_chars) ||
        __builtin_mul_overflow((int64_t)max_future_seconds, (int64_t)1000000, &future_us)) {
        PyErr_SetString(PyExc_ValueError, "AdmissionCore: exact ints, a future bound in 64 bits");
        return NULL;
    }
    AdmissionCore *self = (AdmissionCore *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->admitted = Py_NewRef(admitted);
    self->max_id_chars_object = Py_NewRef(max_id_chars);
    self->max_record_bytes = max_record_bytes, self->max_id_chars = id_chars;
    self->earliest = earliest, self->max_future_us = future_us;
    return (PyObject *)self;
}

static PyMethodDef admission_methods[] = {
    {"usual", (PyCFunction)(void (*)(void))admission_usual, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject AdmissionCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.AdmissionCore",
    .tp_doc = PyDoc_STR("stream/worker/admission.py's check_event for the usual event"),
    .tp_basicsize = sizeof(AdmissionCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = admission_new,
    .tp_dealloc = (destructor)admission_dealloc,
    .tp_traverse = (traverseproc)admission_traverse,
    .tp_clear = (inquiry)admission_clear,
    .tp_methods = admission_methods,
};

/* ------------------------------------------------------------------ guard glue */

/* stream/detection/guard.py's Guard.observe() for the usual event, when both detectors
 * are native: the same steps (identity, time range, both detectors, the tenant's advance
 * step) without a Python frame per event. Anything else (not an exact dict, a service of
 * the worker's own records, an identity admission would not pass: the Python raises
 * its error) goes to that method's Python (slow) before anything changed; decisions go
 * to Guard._decided (rare). */

typedef struct {
    PyObject_HEAD
    PyObject *lockout, *spray;   /* the detectors' observe_identified */
    PyObject *advanced;          /* the guard's dict: tenant_id -> event time advanced to */
    PyObject *advance, *decided, *slow;
    PyObject *keys_service, *lockout_service;
    int64_t step, end;           /* _ADVANCE_STEP; _OBSERVED_TIMES.stop */
} GuardCore;

/* decisions += more (both lists; more's reference consumed); -1 on error */
static int extend(PyObject *decisions, PyObject *more) {
    if (more == NULL) return -1;
    int failed = PyList_CheckExact(more)
                     ? PyList_SetSlice(decisions, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX, more)
                     : (PyErr_SetString(PyExc_TypeError, "a detector returned no list"), -1);
    Py_DECREF(more);
    return failed;
}

static PyObject *guard_observe(GuardCore *self, PyObject *event) {
    if (!PyDict_CheckExact(event)) return PyObject_CallOneArg(self->slow, event);
    PyObject *service = PyDict_GetItemWithError(event, s_service);
    if (service == NULL && PyErr_Occurred()) return NULL;
    if (service != NULL && service != Py_None) {
        if (!PyUnicode_CheckExact(service) ||
            PyUnicode_Compare(service, self->keys_service) == 0 ||
            PyUnicode_Compare(service, self->lockout_service) == 0)
            return PyObject_CallOneArg(self->slow, event);
    }
    PyObject *tenant = identity_text(event, s_tenant_id);
    PyObject *event_id = tenant == NULL ? NULL : identity_text(event, s_event_id);
    PyObject *at = event_id == NULL ? NULL : PyDict_GetItemWithError(event, s_occurred_at);
    if (PyErr_Occurred()) return NULL;
    if (at == NULL || !PyLong_CheckExact(at)) return PyObject_CallOneArg(self->slow, event);
    int64_t time, since = 0, gap;
    int fits = exact_int64(at, &time);
    if (fits < 0) return NULL;
    if (!fits || time < 0 || time >= self->end) return PyList_New(0); /* not observed */
    PyObject *since_object = PyDict_GetItemWithError(self->advanced, tenant);
    if (since_object == NULL && PyErr_Occurred()) return NULL;
    if (since_object != NULL) {
        if ((fits = exact_int64(since_object, &since)) < 0) return NULL;
        if (!fits) return PyObject_CallOneArg(self->slow, event);
    }
    /* time >= 0, so only a very negative since overflows: a step is then due */
    int due = __builtin_sub_overflow(time, since, &gap) || gap >= self->step;
    /* held: the detectors call Python, which could change the event */
    Py_INCREF(event), Py_INCREF(tenant), Py_INCREF(event_id), Py_INCREF(at);
    PyObject *args[4] = {event, tenant, event_id, at}, *result = NULL;
    PyObject *decisions = PyObject_Vectorcall(self->lockout, args, 4, NULL);
    if (decisions == NULL) goto done;
    if (!PyList_CheckExact(decisions)) {
        PyErr_SetString(PyExc_TypeError, "a detector returned no list");
        goto done;
    }
    if (extend(decisions, PyObject_Vectorcall(self->spray, args, 4, NULL)) < 0) goto done;
    PyObject *advance_args[2] = {tenant, at};
    if (due && extend(decisions, PyObject_Vectorcall(self->advance, advance_args, 2, NULL)) < 0)
        goto done;
    result = PyList_GET_SIZE(decisions) == 0 ? Py_NewRef(decisions)
                                             : PyObject_CallOneArg(self->decided, decisions);
done:
    Py_XDECREF(decisions);
    Py_DECREF(event), Py_DECREF(tenant), Py_DECREF(event_id), Py_DECREF(at);
    return result;
}

static int guard_traverse(GuardCore *self, visitproc visit, void *arg) {
    Py_VISIT(self->lockout);
    Py_VISIT(self->spray);
    Py_VISIT(self->advanced);
    Py_VISIT(self->advance);
    Py_VISIT(self->decided);
    Py_VISIT(self->slow);
    return 0;
}

static int guard_clear(GuardCore *self) {
    Py_CLEAR(self->lockout);
    Py_CLEAR(self->spray);
    Py_CLEAR(self->advanced);
    Py_CLEAR(self->advance);
    Py_CLEAR(self->decided);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->keys_service);
    Py_CLEAR(self->lockout_service);
    return 0;
}

static void guard_dealloc(GuardCore *self) {
    PyObject_GC_UnTrack(self);
    guard_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* GuardCore(lockout_observe, spray_observe, advanced, advance, decided, slow, keys_service,
 * lockout_service, step, end) */
static PyObject *guard_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *lockout, *spray, *advanced, *advance, *decided, *slow, *keys, *own;
    long long step, end;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "GuardCore takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OOO!OOOUULL:GuardCore", &lockout, &spray, &PyDict_Type,
                          &advanced, &advance, &decided, &slow, &keys, &own, &step, &end))
        return NULL;
    if (!PyDict_CheckExact(advanced) || step <= 0 || end <= 0) {
        PyErr_SetString(PyExc_ValueError, "GuardCore needs an exact dict, a step and end > 0");
        return NULL;
    }
    GuardCore *self = (GuardCore *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->lockout = Py_NewRef(lockout), self->spray = Py_NewRef(spray);
    self->advanced = Py_NewRef(advanced), self->advance = Py_NewRef(advance);
    self->decided = Py_NewRef(decided), self->slow = Py_NewRef(slow);
    self->keys_service = Py_NewRef(keys), self->lockout_service = Py_NewRef(own);
    self->step = step, self->end = end;
    return (PyObject *)self;
}

static PyMethodDef guard_methods[] = {
    {"observe", (PyCFunction)guard_observe, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject GuardCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.GuardCore",
    .tp_doc = PyDoc_STR("stream/detection/guard.py's Guard.observe glue in C"),
    .tp_basicsize = sizeof(GuardCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = guard_new,
    .tp_dealloc = (destructor)guard_dealloc,
    .tp_traverse = (traverseproc)guard_traverse,
    .tp_clear = (inquiry)guard_clear,
    .tp_methods = guard_methods,
};

static int guard_init(PyObject *module) {
    if (PyType_Ready(&GuardCoreType) < 0 || PyType_Ready(&AdmissionCoreType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "AdmissionCore", (PyObject *)&AdmissionCoreType) < 0)
        return -1;
    if ((s_event_type_other = PyUnicode_InternFromString("event_type_other")) == NULL ||
        (s_tenant_id = PyUnicode_InternFromString("tenant_id")) == NULL ||
        (s_event_id = PyUnicode_InternFromString("event_id")) == NULL ||
        (s_occurred_at = PyUnicode_InternFromString("occurred_at")) == NULL)
        return -1;
    return PyModule_AddObjectRef(module, "GuardCore", (PyObject *)&GuardCoreType);
}

/* ------------------------------------------------------------------ usual pass */

/* stream/worker/sequencing.py's SequencerWorker._handle and _publish_sequenced for the
 * usual events of one envelope, in one C loop instead of a Python frame per step: the
 * reader's own header and the flat reader, AdmissionCore.usual, leaf_known (which leaves
 * any value holding the sealed prefix to Python), the sequencer's native offer, the
 * chained body, the observer's times and the guard's observe. An event any of those
 * leaves to Python (None, False, a mark) stops the loop before anything changed, and the
 * worker handles it in Python; so does one the offer does not sequence in C (a tenant
 * not yet known, a duplicate, a conflict, a replay). */

typedef struct {
    PyObject_HEAD
    FlatReader *reader;
    AdmissionCore *admission;
    PyObject *header;       /* the events' single-object header (bytes) */
    PyObject *magic, *mark; /* canonical.py's MAGIC and _SEALED_MARK */
    PyObject *offer;        /* authtrail._hashing.sequencer_offer */
} UsualPass;

/* What run() says about where it stopped (stream/worker/usual_pass.py's STOPPED, ...). */
enum { USUAL_STOPPED = 0, USUAL_FILLED = 1, USUAL_DECIDED = 2, USUAL_UNSPLICED = 3 };

static PyObject *usual_result(Py_ssize_t next, int kind, PyObject *rest) {
    return Py_BuildValue("niO", next, kind, rest == NULL ? Py_None : rest);
}

/* The event at value (exact bytes) decoded, admitted as usual and its leaf, or 0 with
 * both NULL when it is left to Python; -1 on error. */
static int usual_event(UsualPass *self, PyObject *value, PyObject *const *admit_args,
                       PyObject **event, PyObject **leaf) {
    *event = *leaf = NULL;
    Py_ssize_t size = PyBytes_GET_SIZE(value), header_size = PyBytes_GET_SIZE(self->header);
    if (size > self->admission->max_record_bytes || size < header_size ||
        memcmp(PyBytes_AS_STRING(value), PyBytes_AS_STRING(self->header),
               (size_t)header_size) != 0)
        return 0;
    Cursor c = {(const unsigned char *)PyBytes_AS_STRING(value), header_size, size};
    int status = read_record(self->reader, &c, event);
    if (status == -2) return -1;
    if (status == -1 || c.pos != c.length) {
        Py_CLEAR(*event);
        return 0;
    }
    PyObject *args[5] = {*event, admit_args[0], admit_args[1], admit_args[2], admit_args[3]};
    PyObject *usual = admission_usual(self->admission, args, 5);
    if (usual != Py_True) {
        Py_CLEAR(*event);
        if (usual == NULL) return -1;
        Py_DECREF(usual);
        return 0;
    }
    Py_DECREF(usual);
    PyObject *leaf_args[3] = {*event, self->magic, self->mark};
    *leaf = leaf_known(NULL, leaf_args, 3);
    if (*leaf == NULL || *leaf == Py_None) {
        int failed = *leaf == NULL;
        Py_CLEAR(*leaf);
        Py_CLEAR(*event);
        return failed ? -1 : 0;
    }
    return 1;
}

/* run(sequencer, events, start, offset, timestamp, partition, partitions, epoch, observe,
 *     filled, observed, out) -> (next, kind, rest)
 * Handles events[start:] (exact bytes, their indexes their places) of the envelope read at
 * offset while they are usual; or, when offset and timestamp are lists as long as events,
 * events[start:] as bare messages, each read at its offset with its timestamp (index None:
 * a run of records, stream/worker/record_runs.py). Appends tenant_id, seq, occurred_at and
 * chained body of each to out, and each occurred_at to observed[tenant_id] (observed: a
 * dict, or None).
 * observe: the guard's observe, or None. filled: the sequencer's list of tenants whose
 * batch filled.
 * Stops with (next, USUAL_STOPPED, None) before an event it leaves to Python (next ==
 * len(events) when it handled all), or after handling event next - 1 with USUAL_FILLED
 * (filled is no longer empty), USUAL_DECIDED (rest: the guard's decisions) or
 * USUAL_UNSPLICED (rest: (event, link), sequenced but its body left to Python). */
static PyObject *usual_run(UsualPass *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 12) {
        PyErr_SetString(PyExc_TypeError, "run() takes 12 arguments");
        return NULL;
    }
    PyObject *sequencer = args[0], *events = args[1], *offsets = args[3], *times = args[4];
    PyObject *partition = args[5], *epoch = args[7], *observe = args[8], *filled = args[9];
    PyObject *observed = args[10], *out = args[11];
    Py_ssize_t start = PyLong_AsSsize_t(args[2]);
    if (start == -1 && PyErr_Occurred()) return NULL;
    if (!PyList_CheckExact(events) || !PyList_CheckExact(filled) || !PyList_CheckExact(out) ||
        !(observed == Py_None || PyDict_CheckExact(observed)) || start < 0) {
        PyErr_SetString(PyExc_TypeError, "run(): exact lists, a dict or None");
        return NULL;
    }
    int bare = PyList_CheckExact(offsets);
    if (bare && (!PyList_CheckExact(times) ||
                 PyList_GET_SIZE(offsets) != PyList_GET_SIZE(events) ||
                 PyList_GET_SIZE(times) != PyList_GET_SIZE(events))) {
        PyErr_SetString(PyExc_TypeError, "run(): bare messages need an offset and a "
                                         "timestamp each");
        return NULL;
    }
    Py_ssize_t i = start;
    for (; i < PyList_GET_SIZE(events); i++) {
        PyObject *value = PyList_GET_ITEM(events, i);
        if (!PyBytes_CheckExact(value)) break;
        PyObject *offset = bare ? PyList_GET_ITEM(offsets, i) : offsets;
        PyObject *size = PyLong_FromSsize_t(PyBytes_GET_SIZE(value));
        if (size == NULL) return NULL;
        Py_INCREF(value);
        PyObject *admit_args[4] = {size, bare ? PyList_GET_ITEM(times, i) : times, partition,
                                   args[6]};
        PyObject *event, *leaf, *index = NULL, *offered = NULL, *body = NULL, *result = NULL;
        int left = 0; /* the offer left it to Python, nothing changed: stop before it */
        int usual = usual_event(self, value, admit_args, &event, &leaf);
        Py_DECREF(size);
        if (usual <= 0) {
            Py_DECREF(value);
            if (usual < 0) return NULL;
            break;
        }
        /* admission saw both as non-empty exact str, occurred_at as an exact int */
        PyObject *tenant = PyDict_GetItemWithError(event, s_tenant_id);
        PyObject *event_id = tenant == NULL ? NULL : PyDict_GetItemWithError(event, s_event_id);
        PyObject *at = event_id == NULL ? NULL : PyDict_GetItemWithError(event, s_occurred_at);
        if (at == NULL) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "tenant_id");
            goto failed;
        }
        Py_INCREF(tenant), Py_INCREF(at); /* held: observe() runs Python */
        if ((index = bare ? Py_NewRef(Py_None) : PyLong_FromSsize_t(i)) == NULL) goto held;
        PyObject *offer_args[6] = {sequencer, tenant, event_id, leaf, offset, index};
        offered = PyObject_Vectorcall(self->offer, offer_args, 6, NULL);
        if (offered == NULL) goto held;
        if ((left = offered == Py_None)) goto held;
        if (!PyTuple_Check(offered) || PyTuple_GET_SIZE(offered) != 2 ||
            !PyTuple_Check(PyTuple_GET_ITEM(offered, 1)) ||
            PyTuple_GET_SIZE(PyTuple_GET_ITEM(offered, 1)) != 4) {
            PyErr_SetString(PyExc_TypeError, "the offer returned no Offer with a link");
            goto held;
        }
        /* Sequenced: from here on the event is this loop's to finish. */
        PyObject *link = PyTuple_GET_ITEM(offered, 1);
        PyObject *body_args[7] = {value, self->header, link, partition, offset, epoch, index};
        if ((body = chained_body(NULL, body_args, 7)) == NULL) goto held;
        if (body == Py_None) {
            PyObject *rest = PyTuple_Pack(2, event, link);
            if (rest != NULL) result = usual_result(i + 1, USUAL_UNSPLICED, rest);
            Py_XDECREF(rest);
            goto held;
        }
        PyObject *seq = PyTuple_GET_ITEM(link, 0);
        if (PyList_Append(out, tenant) < 0 || PyList_Append(out, seq) < 0 ||
            PyList_Append(out, at) < 0 || PyList_Append(out, body) < 0)
            goto held;
        if (observed != Py_None) {
            PyObject *times = PyDict_GetItemWithError(observed, tenant);
            if (times == NULL) {
                if (PyErr_Occurred() || (times = PyList_New(0)) == NULL) goto held;
                int stored = PyDict_SetItem(observed, tenant, times);
                Py_DECREF(times); /* the dict holds it */
                if (stored < 0) goto held;
            }
            if (!PyList_CheckExact(times)) {
                PyErr_SetString(PyExc_TypeError, "observed times are no list");
                goto held;
            }
            if (PyList_Append(times, at) < 0) goto held;
        }
        if (observe != Py_None) {
            PyObject *decisions = PyObject_CallOneArg(observe, event);
            if (decisions == NULL) goto held;
            if (!PyList_CheckExact(decisions) || PyList_GET_SIZE(decisions) != 0) {
                result = usual_result(i + 1, USUAL_DECIDED, decisions);
                Py_DECREF(decisions);
                goto held;
            }
            Py_DECREF(decisions);
        }
        if (PyList_GET_SIZE(filled) != 0) result = usual_result(i + 1, USUAL_FILLED, NULL);
    held:
        Py_DECREF(tenant), Py_DECREF(at);
    failed:
        Py_XDECREF(index), Py_XDECREF(offered), Py_XDECREF(body);
        Py_DECREF(value), Py_DECREF(event), Py_DECREF(leaf);
        if (result != NULL || PyErr_Occurred()) return result;
        if (left) break;
    }
    return usual_result(i, USUAL_STOPPED, NULL);
}

static int usual_traverse(UsualPass *self, visitproc visit, void *arg) {
    Py_VISIT(self->reader);
    Py_VISIT(self->admission);
    Py_VISIT(self->offer);
    return 0;
}

static int usual_clear(UsualPass *self) {
    Py_CLEAR(self->reader);
    Py_CLEAR(self->admission);
    Py_CLEAR(self->header);
    Py_CLEAR(self->magic);
    Py_CLEAR(self->mark);
    Py_CLEAR(self->offer);
    return 0;
}

static void usual_dealloc(UsualPass *self) {
    PyObject_GC_UnTrack(self);
    usual_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* UsualPass(reader, admission, header, magic, mark, offer) */
static PyObject *usual_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *reader, *admission, *header, *magic, *mark, *offer;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "UsualPass takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!O!SSSO:UsualPass", &FlatReaderType, &reader,
                          &AdmissionCoreType, &admission, &header, &magic, &mark, &offer))
        return NULL;
    if (!PyBytes_CheckExact(header) || !PyBytes_CheckExact(magic) || !PyBytes_CheckExact(mark) ||
        !PyCallable_Check(offer)) {
        PyErr_SetString(PyExc_TypeError, "UsualPass: three exact bytes and a callable offer");
        return NULL;
    }
    UsualPass *self = (UsualPass *)type->tp_alloc(type, 0);
    if (self == NULL) return NULL;
    self->reader = (FlatReader *)Py_NewRef(reader);
    self->admission = (AdmissionCore *)Py_NewRef(admission);
    self->header = Py_NewRef(header), self->magic = Py_NewRef(magic);
    self->mark = Py_NewRef(mark), self->offer = Py_NewRef(offer);
    return (PyObject *)self;
}

static PyMethodDef usual_methods[] = {
    {"run", (PyCFunction)(void (*)(void))usual_run, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject UsualPassType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "authtrail._speedups.UsualPass",
    .tp_doc = PyDoc_STR("stream/worker/sequencing.py's per-event steps for usual events"),
    .tp_basicsize = sizeof(UsualPass),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = usual_new,
    .tp_dealloc = (destructor)usual_dealloc,
    .tp_traverse = (traverseproc)usual_traverse,
    .tp_clear = (inquiry)usual_clear,
    .tp_methods = usual_methods,
};

static int usual_init(PyObject *module) {
    if (PyType_Ready(&UsualPassType) < 0) return -1;
    return PyModule_AddObjectRef(module, "UsualPass", (PyObject *)&UsualPassType);
}

/* ------------------------------------------------------------------ module */

static PyMethodDef methods[] = {
    {"leaf_v1", (PyCFunction)(void (*)(void))leaf_v1, METH_FASTCALL,
     PyDoc_STR("leaf_v1(event, layout, magic) -> bytes | None: the version-1 canonical leaf")},
    {"remember_layout", (PyCFunction)(void (*)(void))remember_layout, METH_FASTCALL,
     PyDoc_STR("remember_layout(keys, layout): the layout leaf_known uses")},
    {"leaf_known", (PyCFunction)(void (*)(void))leaf_known, METH_FASTCALL,
     PyDoc_STR("leaf_known(event, magic, mark) -> bytes | None: leaf_v1 of the remembered "
               "layout, None unless the event has its keys and no mark")},
    {"bytes_array", (PyCFunction)bytes_array, METH_O,
     PyDoc_STR("bytes_array(items) -> bytes | None: an Avro array of bytes in one block")},
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
        PyModule_AddObjectRef(module, "ReorderBuffer", (PyObject *)&ReorderType) < 0 ||
        lockout_init(module) < 0 || spray_init(module) < 0 || guard_init(module) < 0 ||
        usual_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
