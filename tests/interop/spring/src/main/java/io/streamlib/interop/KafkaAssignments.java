package io.streamlib.interop;

import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;

import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.common.TopicPartition;

import org.springframework.cloud.stream.binder.kafka.KafkaBindingRebalanceListener;
import org.springframework.stereotype.Component;

/** Records Kafka partition assignments, so a test knows when an anonymous consumer listens. */
@Component
public class KafkaAssignments implements KafkaBindingRebalanceListener {

	private final Recorder recorder;

	public KafkaAssignments(Recorder recorder) {
		this.recorder = recorder;
	}

	@Override
	public void onPartitionsAssigned(String bindingName, Consumer<?, ?> consumer,
			Collection<TopicPartition> partitions, boolean initial) {
		List<Object> names = new ArrayList<>();
		partitions.forEach(tp -> names.add(tp.toString()));
		this.recorder.write(Map.of("event", "assigned", "binding", bindingName, "partitions", names));
	}

}
