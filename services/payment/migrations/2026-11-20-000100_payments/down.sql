DROP TABLE data_platform_deliveries; DROP TABLE reservation_projection; DROP TABLE payment_steps; DROP TABLE payments;
