package io.streamlib.interop;

import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.cloud.config.server.EnableConfigServer;
import org.springframework.context.annotation.Configuration;

/**
 * The configserver role: a Spring Cloud Config Server on a native repository, with the
 * monitor's {@code POST /monitor} turning a changed file into a bus refresh of its applications.
 */
@Configuration
@EnableConfigServer
@ConditionalOnProperty(name = "interop.mode", havingValue = "configserver")
public class ConfigServerRole {

}
