package io.streamlib.interop;

import java.util.LinkedHashMap;
import java.util.Map;

import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.context.event.ApplicationReadyEvent;
import org.springframework.cloud.bus.event.AckRemoteApplicationEvent;
import org.springframework.cloud.bus.event.RemoteApplicationEvent;
import org.springframework.cloud.context.environment.EnvironmentChangeEvent;
import org.springframework.cloud.context.scope.refresh.RefreshScopeRefreshedEvent;
import org.springframework.context.event.EventListener;
import org.springframework.core.env.Environment;
import org.springframework.stereotype.Component;

/** A Spring Cloud Bus node that records every bus event it sees and its refresh-scoped value. */
@Component
@ConditionalOnProperty(name = "interop.mode", havingValue = "bus")
public class BusNode {

	private final Recorder recorder;

	private final Greeting greeting;

	private final Environment environment;

	public BusNode(Recorder recorder, Greeting greeting, Environment environment) {
		this.recorder = recorder;
		this.greeting = greeting;
		this.environment = environment;
	}

	@EventListener
	public void ready(ApplicationReadyEvent event) {
		this.recorder.write(Map.of("event", "greeting", "greeting", this.greeting.value()));
	}

	@EventListener
	public void remote(RemoteApplicationEvent event) {
		Map<String, Object> line = new LinkedHashMap<>();
		line.put("event", "bus");
		line.put("type", event.getClass().getSimpleName());
		line.put("id", event.getId());
		line.put("originService", event.getOriginService());
		line.put("destinationService", event.getDestinationService());
		if (event instanceof AckRemoteApplicationEvent ack) {
			line.put("ackId", ack.getAckId());
			line.put("ackDestinationService", ack.getAckDestinationService());
			line.put("ackedEvent", ack.getEvent() == null ? null : ack.getEvent().getName());
		}
		this.recorder.write(line);
	}

	@EventListener
	public void refreshed(RefreshScopeRefreshedEvent event) {
		this.recorder.write(Map.of("event", "greeting", "greeting", this.greeting.value()));
	}

	/** A bus env-change sets keys in the environment; the refresh scope keeps its value. */
	@EventListener
	public void environmentChanged(EnvironmentChangeEvent event) {
		Map<String, Object> line = new LinkedHashMap<>();
		line.put("event", "env-changed");
		line.put("keys", new java.util.ArrayList<>(event.getKeys()));
		line.put("environmentGreeting", this.environment.getProperty("interop.greeting"));
		this.recorder.write(line);
	}

}
