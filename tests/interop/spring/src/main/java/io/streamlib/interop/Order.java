package io.streamlib.interop;

/** The payload both sides exchange: a keyed, numbered record. */
public record Order(String key, int seq, String note) {
}
