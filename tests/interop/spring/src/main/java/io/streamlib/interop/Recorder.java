package io.streamlib.interop;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Base64;
import java.util.Collection;
import java.util.Map;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.stereotype.Component;

/** Appends one JSON object per line to the file named by {@code interop.out}; the tests read it. */
@Component
public class Recorder {

	private final Path out;

	public Recorder(@Value("${interop.out}") String out) {
		this.out = Path.of(out);
	}

	public synchronized void write(Map<String, ?> line) {
		try {
			Files.writeString(this.out, json(line) + "\n", StandardCharsets.UTF_8,
					StandardOpenOption.CREATE, StandardOpenOption.APPEND);
		}
		catch (IOException ex) {
			throw new UncheckedIOException(ex);
		}
	}

	/** A small JSON writer, so the record does not depend on the Jackson generation in use. */
	static String json(Object value) {
		if (value == null) {
			return "null";
		}
		if (value instanceof Boolean || value instanceof Number) {
			return value.toString();
		}
		if (value instanceof Map<?, ?> map) {
			StringBuilder sb = new StringBuilder("{");
			for (Map.Entry<?, ?> e : map.entrySet()) {
				if (sb.length() > 1) {
					sb.append(',');
				}
				sb.append(json(String.valueOf(e.getKey()))).append(':').append(json(e.getValue()));
			}
			return sb.append('}').toString();
		}
		if (value instanceof Collection<?> items) {
			StringBuilder sb = new StringBuilder("[");
			for (Object item : items) {
				if (sb.length() > 1) {
					sb.append(',');
				}
				sb.append(json(item));
			}
			return sb.append(']').toString();
		}
		if (value instanceof byte[] bytes) {
			return json(Map.of("base64", Base64.getEncoder().encodeToString(bytes)));
		}
		String s = value.toString();
		StringBuilder sb = new StringBuilder("\"");
		for (int i = 0; i < s.length(); i++) {
			char c = s.charAt(i);
			if (c == '"' || c == '\\') {
				sb.append('\\').append(c);
			}
			else if (c < 0x20) {
				sb.append(String.format("\\u%04x", (int) c));
			}
			else {
				sb.append(c);
			}
		}
		return sb.append('"').toString();
	}

}
