import CZlib
import Foundation

/// The content coding of sync bodies (HTTP `Content-Encoding`): gzip, both ways, negotiated.
///
/// A laptop asks for gzip answers with `Accept-Encoding: gzip`; the server says in every answer
/// that it takes gzip requests (`Accept-Encoding: gzip`, RFC 7694), and a laptop compresses its
/// uploads once it has seen that. A body is compressed only when it is large enough to gain.
/// Signatures and `Content-Digest` cover the body as sent (RFC 9530: the content after its
/// coding), so a body is authenticated before it is decompressed, and it is decompressed only
/// up to the limit its uncompressed form has always had.
///
/// zlib is called directly: a decoder must refuse a stream that stops short or is followed by
/// other bytes, and compress-nio's decompression neither reports the first nor stops on the
/// second (its windowed form loops on trailing bytes).
public enum BodyCoding {
    /// The one coding spoken (`Content-Encoding` / `Accept-Encoding` token).
    public static let gzip = "gzip"

    /// Smaller bodies go as they are: gzip's 18 bytes of framing cost more than they save on a
    /// few hundred bytes that are mostly signatures and hashes.
    public static let minimumBytes = 512

    /// A middle level: the server compresses every large answer, and these bodies' signatures
    /// and hashes do not compress, so the higher levels buy few bytes with much CPU.
    static let level: Int32 = 4

    /// `bytes` gzip-compressed (RFC 1952).
    public static func compress(_ bytes: [UInt8]) -> [UInt8] {
        var stream = z_stream()
        // windowBits 15 + 16: a gzip wrapper; memLevel 8 is zlib's default.
        guard deflateInit2_(&stream, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            preconditionFailure("zlib cannot start a stream")  // only on a wrong zlib build or no memory
        }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))))
        var input = bytes
        let written: Int = input.withUnsafeMutableBufferPointer { inBuf in
            output.withUnsafeMutableBufferPointer { outBuf in
                stream.next_in = inBuf.baseAddress
                stream.avail_in = uInt(inBuf.count)
                stream.next_out = outBuf.baseAddress
                stream.avail_out = uInt(outBuf.count)
                // deflateBound is enough for one Z_FINISH call to end the stream.
                let rc = deflate(&stream, Z_FINISH)
                precondition(rc == Z_STREAM_END, "zlib did not finish within deflateBound")
                return outBuf.count - Int(stream.avail_out)
            }
        }
        output.removeSubrange(written...)
        return output
    }

    /// A gzip body decompressed. Refused when corrupt, when its stream stops short or is
    /// followed by other bytes, and when it would exceed `limit` bytes (a small body can
    /// inflate a thousandfold): the output never grows past the limit.
    public static func decompress(_ bytes: [UInt8], limit: Int) throws(BodyCodingError) -> [UInt8] {
        var stream = z_stream()
        guard inflateInit2_(&stream, 15 + 16, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw BodyCodingError(.corrupt)
        }
        defer { inflateEnd(&stream) }
        // Past the limit: a value of our own, not zlib's Z_MEM_ERROR (which is no memory).
        let pastLimit: Int32 = .min
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        var input = bytes
        let result: Int32 = input.withUnsafeMutableBufferPointer { inBuf in
            stream.next_in = inBuf.baseAddress
            stream.avail_in = uInt(inBuf.count)
            while true {
                let (rc, produced) = chunk.withUnsafeMutableBufferPointer { outBuf in
                    stream.next_out = outBuf.baseAddress
                    stream.avail_out = uInt(outBuf.count)
                    let rc = inflate(&stream, Z_NO_FLUSH)
                    return (rc, outBuf.count - Int(stream.avail_out))
                }
                guard rc == Z_OK || rc == Z_STREAM_END else { return rc }
                if produced > limit - output.count { return pastLimit }
                output.append(contentsOf: chunk[..<produced])
                if rc == Z_STREAM_END { return stream.avail_in == 0 ? Z_STREAM_END : Z_DATA_ERROR }
                // Input gone and no end: the stream stops short.
                if stream.avail_in == 0 && produced < chunk.count { return Z_BUF_ERROR }
            }
        }
        switch result {
        case Z_STREAM_END: return output
        case pastLimit: throw BodyCodingError(.tooLarge)
        default: throw BodyCodingError(.corrupt)
        }
    }

    /// Whether an `Accept-Encoding` value admits gzip (a `gzip` token whose q is not 0). A
    /// value this cannot read admits nothing: the body then goes as it is.
    public static func admitsGzip(_ header: String?) -> Bool {
        guard let header, header.utf8.count <= 256 else { return false }
        for item in header.split(separator: ",") {
            let parts = item.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            guard parts.first == gzip else { continue }
            return !parts.dropFirst().contains { $0.hasPrefix("q=") && Double($0.dropFirst(2)) == 0 }
        }
        return false
    }

    /// What a `Content-Encoding` value asks for: nil for none (or `identity`), `.gzip`, or a
    /// coding this build does not speak.
    public static func coding(of header: String?) -> Coding? {
        guard let header else { return nil }
        let value = header.trimmingCharacters(in: .whitespaces).lowercased()
        if value.isEmpty || value == "identity" { return nil }
        return value == gzip ? .gzip : .unsupported
    }

    public enum Coding: Sendable { case gzip, unsupported }
}

/// Why a body could not be decoded; decided on by its code.
public struct BodyCodingError: Error, Sendable, Equatable {
    public enum Code: Sendable, Equatable { case corrupt, tooLarge }
    public let code: Code
    init(_ code: Code) { self.code = code }
}
