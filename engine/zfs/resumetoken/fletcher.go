package resumetoken

import "encoding/binary"

// fletcher4Word0 returns the first word of OpenZFS's fletcher-4 checksum of
// b, which is all a token carries. The words are 32-bit in byte order bo
// (the host's); fletcher_4_native_varsize sums only whole words, so a tail
// of len(b)%4 bytes does not count. The first word is then just the sum of
// the words modulo 2^64; the other three words are not needed.
func fletcher4Word0(b []byte, bo binary.ByteOrder) uint64 {
	var a uint64
	for i := 0; i+4 <= len(b); i += 4 {
		a += uint64(bo.Uint32(b[i:]))
	}
	return a
}
