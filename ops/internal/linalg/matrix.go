package linalg

import (
	"errors"
	"fmt"
	"unsafe"

	"gonum.org/v1/gonum/blas/blas32"
)

// ErrShape is returned (wrapped, with the offending shapes) when matrix
// shapes are inconsistent with each other or with a Matrix's Data length.
var ErrShape = errors.New("linalg: shape mismatch")

// ErrNotFinite is returned (wrapped) when an input holds a NaN or an
// infinity where the result would be meaningless, e.g. a delta to decompose.
var ErrNotFinite = errors.New("linalg: non-finite value")

// Matrix is a dense row-major float32 matrix: element (i, j) is
// Data[i*Cols+j] and len(Data) == Rows*Cols. The zero value is the empty
// 0×0 matrix. Matrix is a small value type; copies share Data.
type Matrix struct {
	Rows, Cols int
	Data       []float32
}

// NewMatrix returns a zeroed rows×cols matrix. Its Data is 64-byte aligned,
// which the product kernels prefer but do not require.
func NewMatrix(rows, cols int) Matrix {
	if rows < 0 || cols < 0 {
		panic(fmt.Sprintf("linalg: negative dimension %d×%d", rows, cols))
	}
	return Matrix{Rows: rows, Cols: cols, Data: alignedFloat32(rows * cols)}
}

// MatrixOf wraps data as a rows×cols matrix without copying. It fails with
// ErrShape when len(data) != rows*cols.
func MatrixOf(rows, cols int, data []float32) (Matrix, error) {
	m := Matrix{Rows: rows, Cols: cols, Data: data}
	return m, m.check("MatrixOf")
}

// At returns element (i, j).
func (m Matrix) At(i, j int) float32 { return m.Data[i*m.Cols+j] }

// Set sets element (i, j) to v.
func (m Matrix) Set(i, j int, v float32) { m.Data[i*m.Cols+j] = v }

// Row returns row i as a slice of Data (no copy).
func (m Matrix) Row(i int) []float32 { return m.Data[i*m.Cols : (i+1)*m.Cols : (i+1)*m.Cols] }

// Clone returns a deep copy of m.
func (m Matrix) Clone() Matrix {
	c := NewMatrix(m.Rows, m.Cols)
	copy(c.Data, m.Data)
	return c
}

// T returns a new matrix holding the transpose of m.
func (m Matrix) T() Matrix {
	t := NewMatrix(m.Cols, m.Rows)
	const bs = 32
	parallelFor((m.Rows+bs-1)/bs, func(_, blk int) {
		i0 := blk * bs
		i1 := min(i0+bs, m.Rows)
		for j0 := 0; j0 < m.Cols; j0 += bs {
			j1 := min(j0+bs, m.Cols)
			for i := i0; i < i1; i++ {
				row := m.Data[i*m.Cols:]
				for j := j0; j < j1; j++ {
					t.Data[j*m.Rows+i] = row[j]
				}
			}
		}
	})
	return t
}

// General returns m as a gonum blas32.General sharing Data (Stride = Cols).
func (m Matrix) General() blas32.General {
	return blas32.General{Rows: m.Rows, Cols: m.Cols, Stride: max(m.Cols, 1), Data: m.Data}
}

// check reports whether m is well formed.
func (m Matrix) check(what string) error {
	if m.Rows < 0 || m.Cols < 0 || len(m.Data) != m.Rows*m.Cols {
		return fmt.Errorf("%w: %s: %d×%d matrix with %d elements", ErrShape, what, m.Rows, m.Cols, len(m.Data))
	}
	return nil
}

// alignedFloat32 returns a zeroed slice of n float32 whose first element is
// 64-byte aligned. The kernels need 16-byte alignment of packed panels so
// that gonum's dot kernels, whose summation order depends on the alignment
// of their second operand, give the same bits in every run.
func alignedFloat32(n int) []float32 {
	const align = 64
	if n == 0 {
		return []float32{}
	}
	buf := make([]float32, n+align/4)
	off := int((align - uintptr(unsafe.Pointer(&buf[0]))%align) % align / 4)
	return buf[off : off+n : off+n]
}

// overlaps reports whether two float32 slices share memory.
func overlaps(a, b []float32) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0 := uintptr(unsafe.Pointer(&a[0]))
	b0 := uintptr(unsafe.Pointer(&b[0]))
	a1 := a0 + uintptr(len(a))*4
	b1 := b0 + uintptr(len(b))*4
	return a0 < b1 && b0 < a1
}

// sameData reports whether a and b are the same slice (same start and length).
func sameData(a, b []float32) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
