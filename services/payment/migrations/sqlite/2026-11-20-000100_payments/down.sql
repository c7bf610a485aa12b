DROP TABLE data_platform_deliveries; DROP TABLE ended_passes; DROP TABLE reservation_projection; DROP TABLE payment_steps; DROP TABLE payments;
