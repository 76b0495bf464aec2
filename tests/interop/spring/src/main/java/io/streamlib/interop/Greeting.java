package io.streamlib.interop;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.cloud.context.config.annotation.RefreshScope;
import org.springframework.stereotype.Component;

/** A refresh-scoped bean: a bus refresh makes it read {@code interop.greeting} again. */
@Component
@RefreshScope
@ConditionalOnProperty(name = "interop.mode", havingValue = "bus")
public class Greeting {

	private final String value;

	public Greeting(@Value("${interop.greeting:none}") String value) {
		this.value = value;
	}

	public String value() {
		return this.value;
	}

}
