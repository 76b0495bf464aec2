package io.streamlib.interop;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.Consumer;

import io.micrometer.tracing.Span;
import io.micrometer.tracing.Tracer;

import org.springframework.amqp.core.DeclarableCustomizer;
import org.springframework.amqp.core.Queue;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.ApplicationRunner;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.cloud.stream.function.StreamBridge;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.event.EventListener;
import org.springframework.messaging.Message;

/**
 * One Spring Cloud Stream application whose role is chosen by the Spring profile (which sets
 * {@code interop.mode}): producer, consumer, failing (always throws, so the binder dead-letters)
 * or bus (a Spring Cloud Bus node). The consumer records the trace id current while it
 * handles a message.
 */
@SpringBootApplication
public class InteropApp {

	public static void main(String[] args) {
		SpringApplication.run(InteropApp.class, args);
	}

	@EventListener
	public void ready(ApplicationReadyEvent event) {
		event.getApplicationContext().getBean(Recorder.class).write(Map.of("event", "ready"));
	}

	/**
	 * Spring AMQP 4 declares anonymous queues with x-queue-leader-locator, which RabbitMQ 3.10
	 * refuses; the binder applies every DeclarableCustomizer before declaring.
	 */
	@Bean
	public DeclarableCustomizer noLeaderLocator() {
		return declarable -> {
			if (declarable instanceof Queue queue) {
				queue.removeArgument("x-queue-leader-locator");
			}
			return declarable;
		};
	}

	@Bean
	@ConditionalOnProperty(name = "interop.mode", havingValue = "producer")
	public ApplicationRunner producer(StreamBridge bridge, Recorder recorder,
			ConfigurableApplicationContext context, @Value("${interop.keys-file}") String keysFile,
			@Value("${interop.count}") int count) {
		return args -> {
			List<String> keys = Files.readAllLines(Path.of(keysFile), StandardCharsets.UTF_8);
			for (int seq = 0; seq < count; seq++) {
				bridge.send("out-0", new Order(keys.get(seq % keys.size()), seq, "java"));
			}
			recorder.write(Map.of("event", "sent", "count", count));
			System.exit(SpringApplication.exit(context));
		};
	}

	@Bean
	@ConditionalOnProperty(name = "interop.mode", havingValue = "consumer")
	public Consumer<Message<Order>> sink(Recorder recorder, ObjectProvider<Tracer> tracer) {
		return message -> {
			Map<String, Object> line = received("received", message);
			Span span = tracer.getIfAvailable(() -> Tracer.NOOP).currentSpan();
			line.put("traceId", span == null ? null : span.context().traceId());
			recorder.write(line);
		};
	}

	@Bean
	@ConditionalOnProperty(name = "interop.mode", havingValue = "failing")
	public Consumer<Message<Order>> failing(Recorder recorder) {
		return message -> {
			recorder.write(received("attempt", message));
			throw new IllegalStateException("refused " + message.getPayload().seq());
		};
	}

	static Map<String, Object> received(String event, Message<Order> message) {
		Map<String, Object> line = new LinkedHashMap<>();
		line.put("event", event);
		line.put("payloadClass", message.getPayload().getClass().getName());
		line.put("key", message.getPayload().key());
		line.put("seq", message.getPayload().seq());
		line.put("note", message.getPayload().note());
		Map<String, Object> headers = new LinkedHashMap<>();
		Map<String, Object> types = new LinkedHashMap<>();
		message.getHeaders().forEach((name, value) -> {
			if (value instanceof byte[] bytes) {
				headers.put(name, new String(bytes, StandardCharsets.UTF_8));
			}
			else if (value instanceof String || value instanceof Number || value instanceof Boolean) {
				headers.put(name, value);
			}
			else {
				headers.put(name, String.valueOf(value));
			}
			types.put(name, value == null ? "null" : value.getClass().getName());
		});
		line.put("headers", headers);
		line.put("headerTypes", types);
		return line;
	}

}
